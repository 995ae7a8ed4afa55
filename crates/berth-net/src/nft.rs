//! Masquerade and forwarding rules in the nftables table `ip berth`, through the `nft` command.
//!
//! Every rule of a network carries the comment `berth:<bridge>`, so its rules can be found and
//! deleted by handle. Installing first deletes the bridge's old rules, so it is idempotent.
//! The table and its two base chains (`postrouting`: nat/srcnat, `forward`: filter) are created
//! on demand and left in place (empty) when the last network goes: deleting them could race with
//! another process adding a network.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::cidr::Ipv4Net;
use crate::error::{Error, Result};

const NFT_TIMEOUT: Duration = Duration::from_secs(10);
const TABLE: &str = "berth";

/// Runs `nft` with `args` and `stdin`, bounded by a timeout. `Ok(None)` when `nft` is missing.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<Option<String>> {
    let mut child = match Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Nft(format!("cannot run nft: {e}"))),
    };
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes())
            .map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
    }
    let deadline = Instant::now() + NFT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout("nft".to_owned()));
            }
            Err(e) => return Err(Error::Nft(format!("waiting for nft: {e}"))),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("reading nft output: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(format!(
            "nft {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn comment(bridge: &str) -> String {
    format!("berth:{bridge}")
}

/// The nft script that (re)creates the rules of one network (pure; unit-tested).
pub(crate) fn rules_script(bridge: &str, subnet: &Ipv4Net, internal: bool) -> String {
    let c = comment(bridge);
    let mut s = format!(
        "add table ip {TABLE}\n\
         add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add chain ip {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}\n"
    );
    if internal {
        // Drops go first (insert) so another network's accept rules cannot let traffic in or out.
        s += &format!(
            "insert rule ip {TABLE} forward iifname \"{bridge}\" oifname != \"{bridge}\" drop comment \"{c}\"\n\
             insert rule ip {TABLE} forward oifname \"{bridge}\" iifname != \"{bridge}\" drop comment \"{c}\"\n"
        );
    } else {
        s += &format!(
            "add rule ip {TABLE} postrouting ip saddr {subnet} oifname != \"{bridge}\" masquerade comment \"{c}\"\n\
             add rule ip {TABLE} forward iifname \"{bridge}\" accept comment \"{c}\"\n\
             add rule ip {TABLE} forward oifname \"{bridge}\" ct state established,related accept comment \"{c}\"\n"
        );
    }
    s += &format!(
        "add rule ip {TABLE} forward iifname \"{bridge}\" oifname \"{bridge}\" accept comment \"{c}\"\n"
    );
    s
}

/// Handles of the rules tagged for `bridge` in `nft -a list table` output (pure; unit-tested).
pub(crate) fn rule_handles(listing: &str, bridge: &str) -> Vec<(String, u64)> {
    let tag = format!("comment \"{}\"", comment(bridge));
    let mut chain = String::new();
    let mut out = Vec::new();
    for line in listing.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("chain ") {
            chain = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            continue;
        }
        if !l.contains(&tag) {
            continue;
        }
        if let Some((_, h)) = l.rsplit_once("# handle ") {
            if let Ok(h) = h.trim().parse() {
                out.push((chain.clone(), h));
            }
        }
    }
    out
}

/// Deletes the rules of `bridge`. `Ok(false)` when `nft` is missing.
pub(crate) fn remove_rules(bridge: &str) -> Result<bool> {
    let listing = match nft(&["-a", "list", "table", "ip", TABLE], None) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(false),
        // no table: nothing to delete
        Err(Error::Nft(m)) if m.contains("No such file") => return Ok(true),
        Err(e) => return Err(e),
    };
    let handles = rule_handles(&listing, bridge);
    if handles.is_empty() {
        return Ok(true);
    }
    let script: String = handles
        .iter()
        .map(|(chain, h)| format!("delete rule ip {TABLE} {chain} handle {h}\n"))
        .collect();
    nft(&["-f", "-"], Some(&script))?;
    debug!(bridge, rules = handles.len(), "nft rules removed");
    Ok(true)
}

/// Installs (replacing) the rules of a network. A missing `nft` is logged and skipped.
pub(crate) fn install_rules(bridge: &str, subnet: &Ipv4Net, internal: bool) -> Result<()> {
    if !remove_rules(bridge)? {
        warn!(
            bridge,
            "nft not found: no masquerade for containers (install Debian's nftables)"
        );
        return Ok(());
    }
    nft(&["-f", "-"], Some(&rules_script(bridge, subnet, internal)))?;
    debug!(bridge, %subnet, internal, "nft rules installed");
    Ok(())
}

/// Turns on `net.ipv4.ip_forward`.
pub(crate) fn enable_ip_forward() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(p, b"1").map_err(|e| Error::io("write", p, e))
}

/// The ruleset as `nft list ruleset` prints it (`None` without `nft`); for tests and debugging.
pub fn list_ruleset() -> Result<Option<String>> {
    nft(&["list", "ruleset"], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_and_handles() {
        let subnet: Ipv4Net = "10.9.0.0/24".parse().unwrap();
        let s = rules_script("br-x", &subnet, false);
        assert!(s.contains(
            "ip saddr 10.9.0.0/24 oifname != \"br-x\" masquerade comment \"berth:br-x\""
        ));
        let s = rules_script("br-x", &subnet, true);
        assert!(!s.contains("masquerade"));
        assert!(
            s.contains("insert rule ip berth forward iifname \"br-x\" oifname != \"br-x\" drop")
        );
        let listing = r#"table ip berth { # handle 7
	chain postrouting { # handle 1
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.9.0.0/24 oifname != "br-x" masquerade comment "berth:br-x" # handle 4
		ip saddr 10.8.0.0/24 oifname != "br-xy" masquerade comment "berth:br-xy" # handle 5
	}
	chain forward { # handle 2
		iifname "br-x" accept comment "berth:br-x" # handle 6
	}
}"#;
        assert_eq!(
            rule_handles(listing, "br-x"),
            vec![("postrouting".to_owned(), 4), ("forward".to_owned(), 6)]
        );
    }
}
