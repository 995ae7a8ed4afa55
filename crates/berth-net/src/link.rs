//! Netlink (rtnetlink) operations: links, addresses, routes.
//!
//! rtnetlink is async; [`with_netlink`] runs a request future on a current-thread tokio runtime
//! on a dedicated thread (optionally inside a network namespace — a netlink socket belongs to the
//! namespace of the thread that creates it), so the sync API works from inside or outside tokio.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::cidr::Ipv4Net;
use crate::error::{Error, Result};

/// Bound on one batch of netlink requests.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(20);

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;

/// Runs `f` with a fresh netlink handle on a dedicated thread, inside `netns` if given.
pub(crate) fn with_netlink<T, F, Fut>(netns: Option<&Path>, what: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            if let Some(p) = netns {
                crate::netns::enter_netns(p)?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("start netlink runtime", "", e))?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| Error::io("open netlink socket", "", e))?;
                let conn_task = tokio::spawn(conn);
                let r = tokio::time::timeout(NETLINK_TIMEOUT, f(handle)).await;
                conn_task.abort();
                r.map_err(|_| Error::Timeout(format!("netlink: {what}")))?
            })
        })
        .join()
        .map_err(|_| Error::ThreadPanicked("netlink"))?
    })
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// The index of link `name`, `None` if there is none.
pub(crate) async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut s = h.link().get().match_name(name.to_owned()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(Error::netlink(format!("get link {name}"), e)),
    }
}

/// Names of all links.
pub(crate) async fn link_names(h: &Handle) -> Result<Vec<String>> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("list links", e))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        })
        .collect())
}

/// Sets a link up.
pub(crate) async fn set_up(h: &Handle, index: u32, what: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("set {what} up"), e))
}

/// Adds an IPv4 address to a link; already present is fine.
pub(crate) async fn add_address(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    match h
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(Error::netlink(format!("add address {ip}/{prefix}"), e)),
    }
}

/// Creates bridge `name` if missing, sets it up and gives it `gateway/prefix`.
pub(crate) async fn ensure_bridge(
    h: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32> {
    let index = match link_index(h, name).await? {
        Some(i) => i,
        None => {
            match h.link().add(LinkBridge::new(name).build()).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(Error::netlink(format!("create bridge {name}"), e)),
            }
            link_index(h, name)
                .await?
                .ok_or_else(|| Error::Timeout(format!("bridge {name} to appear")))?
        }
    };
    add_address(h, index, gateway, prefix).await?;
    set_up(h, index, name).await?;
    Ok(index)
}

/// Deletes link `name`; missing is fine.
pub(crate) async fn delete_link(h: &Handle, name: &str) -> Result<()> {
    let Some(index) = link_index(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(Error::netlink(format!("delete link {name}"), e)),
    }
}

/// Creates a veth pair `host`/`peer`, attaches `host` to bridge `bridge_index` and sets it up,
/// and moves `peer` into the namespace open as `netns`.
pub(crate) async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    bridge_index: u32,
    netns: &std::fs::File,
) -> Result<()> {
    // One RTM_NEWLINK: the host side enslaved to the bridge and up, the peer created right in
    // the container's namespace (moving an existing link between namespaces waits for RCU grace
    // periods: ~20 ms per container here).
    let mut msg = LinkVeth::new(host, peer)
        .controller(bridge_index)
        .up()
        .build();
    let mut placed = false;
    for attr in msg.attributes.iter_mut() {
        if let LinkAttribute::LinkInfo(infos) = attr {
            for info in infos.iter_mut() {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = info {
                    p.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
                    placed = true;
                }
            }
        }
    }
    if !placed {
        return Err(Error::InvalidConfig(
            "veth request without peer information".to_owned(),
        ));
    }
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("create veth {host}"), e))
}

/// Inside the container namespace: renames `peer` to `ifname`, sets its MAC and address, brings
/// it and `lo` up and adds the default route via `gateway`.
pub(crate) async fn configure_container_side(
    h: &Handle,
    peer: &str,
    ifname: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    let pi = link_index(h, peer)
        .await?
        .ok_or_else(|| Error::Timeout(format!("{peer} to appear in the namespace")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(pi)
                .name(ifname.to_owned())
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("rename {peer} to {ifname}"), e))?;
    add_address(h, pi, ip, prefix).await?;
    set_up(h, pi, ifname).await?;
    if let Some(lo) = link_index(h, "lo").await? {
        set_up(h, lo, "lo").await?;
    }
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(pi)
        .build();
    match h.route().add(route).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(Error::netlink(
            format!("add default route via {gateway}"),
            e,
        )),
    }
}

/// IPv4 networks the host uses: non-default routes of every table and addresses (as their
/// prefixes). Auto-allocated subnets avoid them.
pub fn host_ipv4_networks() -> Result<Vec<Ipv4Net>> {
    with_netlink(None, "list routes and addresses", |h| async move {
        let mut out = Vec::new();
        let routes: Vec<_> = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("list routes", e))?;
        for r in routes {
            let len = r.header.destination_prefix_length;
            if len == 0 || !matches!(r.header.kind, RouteType::Unicast) {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(d)) = a {
                    out.extend(Ipv4Net::new_truncate(*d, len));
                }
            }
        }
        let addrs: Vec<_> = h
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("list addresses", e))?;
        for a in addrs {
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    if !ip.is_loopback() {
                        out.extend(Ipv4Net::new_truncate(*ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    })
}

/// Whether a link called `name` exists in the host namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    let name = name.to_owned();
    with_netlink(None, "get link", |h| async move {
        Ok(link_index(&h, &name).await?.is_some())
    })
}

/// Names of the links in a namespace (the host's when `netns` is `None`).
pub fn list_links(netns: Option<&Path>) -> Result<Vec<String>> {
    with_netlink(netns, "list links", |h| async move { link_names(&h).await })
}
