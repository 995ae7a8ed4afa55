//! Root integration tests: real namespaces, bridges, veths, nft rules, the daemon process.
//! Without root they skip, unless `BERTH_REQUIRE_ROOT=1` (CI), where they fail.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_net::dns::wire;
use berth_net::{
    create_netns, delete_netns, is_netns_mount, parse_publish, run_in_netns, CreateOptions,
    EndpointRecord, Error, Ipv4Net, NetdClient, NetworkInfo, NetworkStore,
};

fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("this test needs root (BERTH_REQUIRE_ROOT=1)");
    }
    eprintln!("skipping: needs root");
    false
}

fn rand_hex(n: usize) -> String {
    hex::encode(rand::random::<[u8; 8]>())[..n].to_owned()
}

/// A /24 in 10.200.0.0/13 that overlaps no host route and no other test's network.
fn free_subnet() -> Ipv4Net {
    let host = berth_net::host_ipv4_networks().unwrap();
    for _ in 0..1000 {
        let r: u16 = rand::random();
        let cand = Ipv4Net::new_truncate(
            Ipv4Addr::new(10, 200 + (r % 8) as u8, (r >> 8) as u8, 0),
            24,
        )
        .unwrap();
        if !host.iter().any(|h| h.overlaps(&cand)) {
            return cand;
        }
    }
    panic!("no free test subnet");
}

/// A network, namespaces and a daemon root, all torn down on drop (even after a failure).
struct Fixture {
    dir: tempfile::TempDir,
    store: NetworkStore,
    net: NetworkInfo,
    netns: Vec<PathBuf>,
    containers: Vec<String>,
    daemon_pid: Option<u32>,
}

impl Fixture {
    fn new(n_ns: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(dir.path().join("networks")).unwrap();
        let tag = rand_hex(8);
        let net = store
            .create(
                &format!("test-{tag}"),
                CreateOptions {
                    subnet: Some(free_subnet()),
                    bridge_name: Some(format!("brt-{tag}")),
                    ..Default::default()
                },
            )
            .unwrap();
        std::fs::create_dir(dir.path().join("netns")).unwrap();
        let mut f = Fixture {
            dir,
            store,
            net,
            netns: Vec::new(),
            containers: Vec::new(),
            daemon_pid: None,
        };
        for i in 0..n_ns {
            let p = f.dir.path().join("netns").join(format!("ns{i}"));
            create_netns(&p).unwrap();
            f.netns.push(p);
            f.containers.push(format!("{}{i}", rand_hex(16)));
        }
        f
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("netd")
    }

    fn client(&mut self) -> NetdClient {
        let c = NetdClient::connect_or_spawn(
            &self.root(),
            Path::new(env!("CARGO_BIN_EXE_berth-net-test-netd")),
        )
        .unwrap();
        self.daemon_pid = Some(c.ping().unwrap());
        c
    }

    fn kill_daemon(&mut self) {
        if let Some(pid) = self.daemon_pid.take() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // it is our child's child; wait until it is gone (bounded)
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
                if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill_daemon();
        for c in &self.containers {
            let _ = self.store.detach(&self.net, c);
        }
        for p in &self.netns {
            let _ = delete_netns(p);
        }
        let _ = self.store.remove(&self.net.name);
    }
}

fn links() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn ruleset() -> String {
    berth_net::list_ruleset()
        .unwrap()
        .expect("nft is installed")
}

/// Binds a TCP echo server inside `ns` (the socket stays in that namespace) and serves it from
/// a plain thread.
fn tcp_echo_in(ns: &Path, port: u16) {
    let l = run_in_netns(ns, || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(16) {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = s.read_to_end(&mut v);
                let _ = s.write_all(&v);
            });
        }
    });
}

fn udp_echo_in(ns: &Path, port: u16) {
    let s = run_in_netns(ns, || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 1500];
        for _ in 0..64 {
            let Ok((n, p)) = s.recv_from(&mut b) else {
                return;
            };
            let _ = s.send_to(&b[..n], p);
        }
    });
}

fn tcp_round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(msg).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut v = Vec::new();
    c.read_to_end(&mut v).unwrap();
    v
}

fn udp_round_trip(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(msg, to).unwrap();
    let mut b = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut b).unwrap();
    b[..n].to_vec()
}

#[test]
fn attach_connectivity_and_clean_teardown() {
    if !require_root() {
        return;
    }
    let f = Fixture::new(2);
    let a = f
        .store
        .attach(&f.net, &f.netns[0], &f.containers[0], "eth0")
        .unwrap();
    let b = f
        .store
        .attach(&f.net, &f.netns[1], &f.containers[1], "eth0")
        .unwrap();
    assert_ne!(a.ip, b.ip);
    assert!(f.net.subnet.contains(a.ip) && a.ip != f.net.gateway);
    assert_eq!(a.gateway, f.net.gateway);
    let o = a.ip.octets();
    assert_eq!(
        a.mac,
        format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    // attach again is idempotent (same address, veth recreated)
    let a2 = f
        .store
        .attach(&f.net, &f.netns[0], &f.containers[0], "eth0")
        .unwrap();
    assert_eq!(a2.ip, a.ip);
    let in_ns = berth_net::list_links(Some(&f.netns[0])).unwrap();
    assert!(
        in_ns.contains(&"eth0".to_owned()) && in_ns.contains(&"lo".to_owned()),
        "{in_ns:?}"
    );
    let host = links();
    assert!(
        host.contains(&f.net.bridge) && host.contains(&a.host_veth),
        "{host}"
    );
    let rules = ruleset();
    assert!(
        rules.contains(&format!("berth:{}", f.net.bridge)),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("ip saddr {} ", f.net.subnet)),
        "{rules}"
    );

    // TCP from namespace 1 to a listener in namespace 0, by address
    tcp_echo_in(&f.netns[0], 7000);
    let echoed = run_in_netns(&f.netns[1], || {
        tcp_round_trip(SocketAddr::from((a.ip, 7000)), b"across the bridge")
    })
    .unwrap();
    assert_eq!(echoed, b"across the bridge");
    // and the host reaches the container through the bridge
    assert_eq!(
        tcp_round_trip(SocketAddr::from((a.ip, 7000)), b"host"),
        b"host"
    );

    // removal refused while endpoints exist
    assert!(matches!(
        f.store.remove(&f.net.name),
        Err(Error::NetworkInUse { .. })
    ));

    // teardown leaves nothing behind
    for c in &f.containers {
        f.store.detach(&f.net, c).unwrap();
        f.store.detach(&f.net, c).unwrap(); // idempotent
    }
    f.store.remove(&f.net.name).unwrap();
    for p in &f.netns {
        delete_netns(p).unwrap();
        delete_netns(p).unwrap();
        assert!(!p.exists() && !is_netns_mount(p));
    }
    let host = links();
    assert!(!host.contains(&format!("{}:", f.net.bridge)), "{host}");
    assert!(
        !host.contains(&a.host_veth) && !host.contains(&b.host_veth),
        "{host}"
    );
    let rules = ruleset();
    assert!(
        !rules.contains(&format!("berth:{}", f.net.bridge)),
        "{rules}"
    );
    assert!(!rules.contains(&f.net.subnet.to_string()), "{rules}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(f.dir.path().to_str().unwrap()), "{mounts}");
    assert!(matches!(
        f.store.get(&f.net.name),
        Err(Error::NetworkNotFound(_))
    ));
}

fn dns_query_from(ns: &Path, server: Ipv4Addr, name: &str, id: u16) -> Vec<u8> {
    let q = wire::build_query(id, name, wire::TYPE_A);
    run_in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&q, (server, 53)).unwrap();
        let mut b = [0u8; 1500];
        let (n, _) = s.recv_from(&mut b).unwrap();
        b[..n].to_vec()
    })
    .unwrap()
}

#[test]
fn daemon_publishes_ports_serves_dns_and_restores() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new(2);
    let a = f
        .store
        .attach(&f.net, &f.netns[0], &f.containers[0], "eth0")
        .unwrap();
    let b = f
        .store
        .attach(&f.net, &f.netns[1], &f.containers[1], "eth0")
        .unwrap();
    tcp_echo_in(&f.netns[0], 8080);
    udp_echo_in(&f.netns[0], 5353);
    let client = f.client();
    let mut ports = parse_publish("127.0.0.1::8080").unwrap();
    ports.extend(parse_publish("127.0.0.1::5353/udp").unwrap());
    let rec_a = EndpointRecord {
        container_id: f.containers[0].clone(),
        container_name: "web".into(),
        aliases: vec!["frontend".into()],
        network: f.net.name.clone(),
        gateway: f.net.gateway,
        ip: a.ip,
        ports,
    };
    let published = client.publish_endpoint(&rec_a).unwrap();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|p| p.host_port != 0));
    let (tcp_port, udp_port) = (published[0].host_port, published[1].host_port);
    let rec_b = EndpointRecord {
        container_id: f.containers[1].clone(),
        container_name: "db".into(),
        aliases: vec![],
        network: f.net.name.clone(),
        gateway: f.net.gateway,
        ip: b.ip,
        ports: vec![],
    };
    assert!(client.publish_endpoint(&rec_b).unwrap().is_empty());

    // published TCP and UDP through the proxy
    let tcp_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, tcp_port));
    assert_eq!(tcp_round_trip(tcp_addr, b"via the proxy"), b"via the proxy");
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port));
    assert_eq!(udp_round_trip(&u, udp_addr, b"datagram"), b"datagram");
    assert_eq!(udp_round_trip(&u, udp_addr, b"again"), b"again");

    // DNS from inside namespace 1: names, aliases, name.network, case-insensitive
    for (i, name) in ["web", "WEB.", "frontend", &format!("web.{}", f.net.name)]
        .iter()
        .enumerate()
    {
        let r = dns_query_from(&f.netns[1], f.net.gateway, name, i as u16 + 1);
        assert_eq!(
            wire::parse_a_answers(&r).unwrap(),
            (0, vec![a.ip]),
            "{name}"
        );
    }
    let r = dns_query_from(&f.netns[0], f.net.gateway, "db", 9);
    assert_eq!(wire::parse_a_answers(&r).unwrap(), (0, vec![b.ip]));
    // unknown names go upstream: NXDOMAIN if it answers, SERVFAIL if not (after <= 2 s)
    let t0 = Instant::now();
    let r = dns_query_from(&f.netns[1], f.net.gateway, "no-such-container.invalid", 10);
    let rc = wire::rcode(&r).unwrap();
    assert!(
        rc == wire::RCODE_NXDOMAIN || rc == wire::RCODE_SERVFAIL,
        "rcode {rc}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert_eq!(wire::peek_id(&r), Some(10));

    // port conflicts: held by another container, and by another program
    let clash = EndpointRecord {
        ports: parse_publish(&format!("127.0.0.1:{tcp_port}:80")).unwrap(),
        ..rec_b.clone()
    };
    match client.publish_endpoint(&clash) {
        Err(Error::PortInUse { port, by, .. }) => {
            assert_eq!((port, by.as_str()), (tcp_port, f.containers[0].as_str()))
        }
        other => panic!("expected PortInUse, got {other:?}"),
    }
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let sq_port = squatter.local_addr().unwrap().port();
    let clash = EndpointRecord {
        ports: parse_publish(&format!("127.0.0.1:{sq_port}:80")).unwrap(),
        ..rec_b.clone()
    };
    let e = client.publish_endpoint(&clash).unwrap_err();
    assert!(
        matches!(&e, Error::PortInUse { by, .. } if by == "another program"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("port is already allocated"),
        "{e}"
    );
    // the failed re-publish kept b's endpoint
    let r = dns_query_from(&f.netns[0], f.net.gateway, "db", 11);
    assert_eq!(wire::parse_a_answers(&r).unwrap(), (0, vec![b.ip]));

    // kill -9 the daemon: the stale socket is replaced, everything is restored
    let old_pid = f.daemon_pid.unwrap();
    f.kill_daemon();
    assert!(
        f.root().join("netd.sock").exists(),
        "stale socket left by the killed daemon"
    );
    let client = f.client();
    assert_ne!(f.daemon_pid, Some(old_pid));
    let mut listed: Vec<String> = client
        .list_endpoints()
        .unwrap()
        .into_iter()
        .map(|e| e.container_id)
        .collect();
    listed.sort();
    let mut want = f.containers.clone();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(tcp_round_trip(tcp_addr, b"after restart"), b"after restart");
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        udp_round_trip(&u, udp_addr, b"udp after restart"),
        b"udp after restart"
    );
    let r = dns_query_from(&f.netns[1], f.net.gateway, "web", 12);
    assert_eq!(wire::parse_a_answers(&r).unwrap(), (0, vec![a.ip]));

    // removing the endpoint unbinds its ports and its names
    client.remove_endpoint(&f.containers[0]).unwrap();
    client.remove_endpoint(&f.containers[0]).unwrap();
    assert!(TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(2)).is_err());
    let _rebound = TcpListener::bind(tcp_addr).unwrap();
    let r = dns_query_from(&f.netns[1], f.net.gateway, "web", 13);
    assert_ne!(wire::rcode(&r), Some(wire::RCODE_NOERROR));
    client.remove_endpoint(&f.containers[1]).unwrap();
    assert!(client.list_endpoints().unwrap().is_empty());
    assert!(!f
        .root()
        .join("endpoints")
        .join(format!("{}.json", f.containers[1]))
        .exists());
}

#[test]
fn netns_lifecycle_is_idempotent() {
    if !require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ns");
    create_netns(&p).unwrap();
    create_netns(&p).unwrap();
    assert!(is_netns_mount(&p));
    let links = berth_net::list_links(Some(&p)).unwrap();
    assert_eq!(links, vec!["lo".to_owned()]);
    delete_netns(&p).unwrap();
    delete_netns(&p).unwrap();
    assert!(!p.exists());
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes a host link on drop.
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn masquerade_to_outside_and_internal_networks() {
    if !require_root() {
        return;
    }
    let f = Fixture::new(2);
    // an "outside" network: namespace 1 reached from the host by a veth with its own /30 and no
    // route back to the container subnet, so only masqueraded traffic gets answers
    let outside = free_subnet();
    let (host_ip, out_ip) = (outside.nth(1).unwrap(), outside.nth(2).unwrap());
    let tag = rand_hex(8);
    let (vo, vi) = (format!("vo{tag}"), format!("vi{tag}"));
    ip(&["link", "add", &vo, "type", "veth", "peer", "name", &vi]);
    let _guard = LinkGuard(vo.clone());
    ip(&["link", "set", &vi, "netns", f.netns[1].to_str().unwrap()]);
    ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &vo]);
    ip(&["link", "set", &vo, "up"]);
    run_in_netns(&f.netns[1], || {
        ip(&["addr", "add", &format!("{out_ip}/30"), "dev", &vi]);
        ip(&["link", "set", &vi, "up"]);
        ip(&["link", "set", "lo", "up"]);
    })
    .unwrap();
    // a server in the outside namespace that answers with the peer address it sees
    let l = run_in_netns(&f.netns[1], || TcpListener::bind(("0.0.0.0", 9000)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().unwrap().ip().to_string();
            let _ = s.write_all(peer.as_bytes());
        }
    });
    let a = f
        .store
        .attach(&f.net, &f.netns[0], &f.containers[0], "eth0")
        .unwrap();
    let seen = run_in_netns(&f.netns[0], || {
        tcp_round_trip(SocketAddr::from((out_ip, 9000)), b"")
    })
    .unwrap();
    assert_eq!(
        String::from_utf8(seen).unwrap(),
        host_ip.to_string(),
        "container {} not masqueraded",
        a.ip
    );
    f.store.detach(&f.net, &f.containers[0]).unwrap();

    // an internal network: no masquerade rule, traffic leaving the bridge dropped
    let internal = f
        .store
        .create(
            &format!("internal-{tag}"),
            CreateOptions {
                subnet: Some(free_subnet()),
                internal: true,
                bridge_name: Some(format!("bri-{tag}")),
                ..Default::default()
            },
        )
        .unwrap();
    struct NetGuard<'a>(&'a NetworkStore, &'a NetworkInfo, &'a str);
    impl Drop for NetGuard<'_> {
        fn drop(&mut self) {
            let _ = self.0.detach(self.1, self.2);
            let _ = self.0.remove(&self.1.name);
        }
    }
    let cid = f.containers[0].clone();
    let _ng = NetGuard(&f.store, &internal, &cid);
    f.store
        .attach(&internal, &f.netns[0], &cid, "eth1")
        .unwrap();
    let rules = ruleset();
    assert!(
        rules.contains(&format!("oifname != \"{}\" drop", internal.bridge)),
        "{rules}"
    );
    assert!(
        !rules.contains(&format!("ip saddr {}", internal.subnet)),
        "{rules}"
    );
    // give the outside a route back, so only the drop rule can stop the connection
    run_in_netns(&f.netns[1], || {
        ip(&[
            "route",
            "add",
            &internal.subnet.to_string(),
            "via",
            &host_ip.to_string(),
        ])
    })
    .unwrap();
    let blocked = run_in_netns(&f.netns[0], || {
        // only route to the outside is through the internal bridge's gateway now
        ip(&[
            "route",
            "replace",
            &format!("{out_ip}/32"),
            "via",
            &internal.gateway.to_string(),
        ]);
        TcpStream::connect_timeout(
            &SocketAddr::from((out_ip, 9000)),
            Duration::from_millis(1500),
        )
        .is_err()
    })
    .unwrap();
    assert!(blocked, "internal network reached the outside");
    f.store.detach(&internal, &cid).unwrap();
    f.store.remove(&internal.name).unwrap();
    let rules = ruleset();
    assert!(!rules.contains(&internal.bridge), "{rules}");
}

/// The live claim another Berth root on this host holds on `bridge`, if any (its record
/// still exists): `(subnet, record)`.
fn foreign_claim(bridge: &str, own: &Path) -> Option<(Ipv4Net, PathBuf)> {
    let text = std::fs::read_to_string(format!("/run/berth/networks/{bridge}.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let record = PathBuf::from(v["record"].as_str()?);
    let subnet = v["subnet"].as_str()?.parse().ok()?;
    (record != own && record.exists()).then_some((subnet, record))
}

#[test]
fn default_network_and_automatic_subnets() {
    if !require_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(d.path()).unwrap();
    let def = store.ensure_default().unwrap();
    assert_eq!(def.name, "bridge");
    let own = d.path().join(format!("{}.json", def.id));
    // berth0 unless another root on this host has it (a developer's /var/lib/berth).
    match foreign_claim("berth0", &own) {
        None => assert_eq!(def.bridge, "berth0"),
        Some((subnet, record)) => {
            assert_eq!(def.bridge, format!("br-{}", &def.id[..12]), "{record:?}");
            assert!(!subnet.overlaps(&def.subnet));
        }
    }
    assert_eq!(store.ensure_default().unwrap(), def);
    let host = berth_net::host_ipv4_networks().unwrap();
    // 172.17.0.0/16 unless the host or another root uses it (only the record is made: no
    // bridge device yet)
    let preferred: Ipv4Net = "172.17.0.0/16".parse().unwrap();
    if !host.iter().any(|h| h.overlaps(&preferred)) && foreign_claim("berth0", &own).is_none() {
        assert_eq!(def.subnet, preferred);
    }
    let n = store.create("auto", CreateOptions::default()).unwrap();
    assert!(!n.subnet.overlaps(&def.subnet));
    assert!(
        !host.iter().any(|h| h.overlaps(&n.subnet)),
        "{} overlaps a host network",
        n.subnet
    );
    assert_eq!(n.gateway, n.subnet.nth(1).unwrap());
    assert_eq!(n.bridge, format!("br-{}", &n.id[..12]));
    store.remove("auto").unwrap();
    store.remove("bridge").unwrap();
}

/// Two roots on one host (two `berth serve`s, parallel tests): their default networks get
/// different bridges and disjoint subnets even when neither bridge exists yet, and removing
/// one root's network leaves the other's bridge alone.
#[test]
fn two_roots_never_share_a_bridge_or_subnet() {
    if !require_root() {
        return;
    }
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        NetworkStore::open(da.path()).unwrap(),
        NetworkStore::open(db.path()).unwrap(),
    );
    // Both at once, as two servers starting together do.
    let (na, nb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.ensure_default().unwrap());
        let hb = s.spawn(|| b.ensure_default().unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_ne!(na.bridge, nb.bridge);
    assert!(
        !na.subnet.overlaps(&nb.subnet),
        "{} / {}",
        na.subnet,
        nb.subnet
    );
    // Explicit choices that collide with the other root are refused.
    let err = b
        .create(
            "clash",
            CreateOptions {
                subnet: Some(na.subnet),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::SubnetOverlap { .. }), "{err}");
    let err = b
        .create(
            "clash",
            CreateOptions {
                bridge_name: Some(na.bridge.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("another Berth root"), "{err}");
    // A container on each: both bridges exist side by side; removing b's network keeps a's.
    let ra = OneRoot::attach(da, a, na.clone());
    let rb = OneRoot::attach(db, b, nb.clone());
    assert_ne!(ra.ep.mac, rb.ep.mac);
    assert!(berth_net::link_exists(&na.bridge).unwrap());
    assert!(berth_net::link_exists(&nb.bridge).unwrap());
    drop(rb);
    assert!(!berth_net::link_exists(&nb.bridge).unwrap());
    assert!(berth_net::link_exists(&na.bridge).unwrap());
    // b's records are gone with its directory: its bridge name and subnet are free again.
    let dc = tempfile::tempdir().unwrap();
    let c = NetworkStore::open(dc.path()).unwrap();
    let nc = c
        .create(
            "again",
            CreateOptions {
                subnet: Some(nb.subnet),
                bridge_name: Some(nb.bridge.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    c.remove(&nc.name).unwrap();
    drop(ra);
}

/// One root's network with one attached namespace; all removed on drop.
struct OneRoot {
    _dir: tempfile::TempDir,
    store: NetworkStore,
    net: NetworkInfo,
    ns: PathBuf,
    ep: berth_net::Endpoint,
}

impl OneRoot {
    fn attach(dir: tempfile::TempDir, store: NetworkStore, net: NetworkInfo) -> OneRoot {
        let ns = dir.path().join("ns");
        create_netns(&ns).unwrap();
        let ep = store.attach(&net, &ns, "c0", "eth0").unwrap();
        OneRoot {
            _dir: dir,
            store,
            net,
            ns,
            ep,
        }
    }
}

impl Drop for OneRoot {
    fn drop(&mut self) {
        let _ = self.store.detach(&self.net, "c0");
        let _ = delete_netns(&self.ns);
        let _ = self.store.remove(&self.net.name);
    }
}
