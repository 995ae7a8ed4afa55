//! The engine's task sandboxes for real (root only; here because this crate has the test
//! shim binary the engine starts containers with): containers sharing one network namespace,
//! the sandbox cgroup's limits, an OOM kill caused by the sandbox's limit, and removal that
//! leaves no namespace mount, veth or cgroup directory. Each test has its own engine root and
//! network; `Env`'s `Drop` cleans up even when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_engine::container::LogReader;
use berth_engine::{Engine, RunSpec, SandboxSpec};
use berth_runtime::cgroup;

mod common;
use common::unique;

const APPLETS: &[&str] = &["sh", "sleep", "httpd", "wget", "dd", "seq", "cat", "true"];
const IMAGE: &str = "localhost:1/sandbox-test/bb:1";

struct Env {
    dir: tempfile::TempDir,
    root: PathBuf,
    engine: Engine,
    network: Option<String>,
    sandboxes: Vec<String>,
}

impl Env {
    fn new() -> Option<Env> {
        let (dir, root, engine) = common::engine_with_busybox(
            "sandbox tests",
            "berth-sandbox-test-",
            IMAGE,
            APPLETS,
            "hello over localhost\n",
        )?;
        Some(Env {
            dir,
            root,
            engine,
            network: None,
            sandboxes: Vec::new(),
        })
    }

    /// A bridge network of its own with a /24 no host route overlaps.
    fn network(&mut self) -> String {
        let name = unique("sbnet-");
        let host_nets = berth_net::host_ipv4_networks().expect("host routes");
        let cidr = (0..64)
            .map(|_| {
                let n = unique("");
                let b = u8::from_str_radix(&n[..2], 16).expect("hex");
                format!("10.214.{b}.0/24")
                    .parse::<berth_net::Ipv4Net>()
                    .expect("cidr")
            })
            .find(|c| !host_nets.iter().any(|h| h.overlaps(c)))
            .expect("a free /24 in 10.214.0.0/16");
        let opts = berth_net::CreateOptions {
            subnet: Some(cidr),
            ..Default::default()
        };
        self.engine
            .network_store()
            .expect("networks")
            .create(&name, opts)
            .expect("create network");
        self.network = Some(name.clone());
        name
    }

    fn sandbox(&mut self, spec: &SandboxSpec) -> berth_engine::SandboxInfo {
        self.sandboxes.push(spec.name.clone());
        self.engine.create_sandbox(spec).expect("create sandbox")
    }

    fn run(&self, sandbox: &str, cmd: &[&str]) -> String {
        let spec = RunSpec {
            image: IMAGE.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            detach: true,
            sandbox: Some(sandbox.into()),
            ..Default::default()
        };
        self.engine.run(&spec).expect("run").id
    }

    fn wait(&self, id: &str, secs: u64) -> berth_runtime::shim::ExitInfo {
        self.engine
            .wait(id, Duration::from_secs(secs))
            .expect("wait")
            .unwrap_or_else(|| panic!("container {id} still runs after {secs} s"))
    }

    fn log(&self, id: &str) -> String {
        LogReader::new(self.engine.log_path(id))
            .read_new()
            .expect("log")
            .into_iter()
            .map(|e| e.log)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(cs) = self.engine.containers(true) {
            for c in cs {
                let _ = self.engine.remove_with_volumes(&c.record.id, true, true);
            }
        }
        for s in &self.sandboxes {
            let _ = self.engine.remove_sandbox(s);
        }
        if let (Ok(store), Some(n)) = (self.engine.network_store(), &self.network) {
            let _ = store.remove(n);
        }
        for pid in netd_pids(&self.root.join("netd")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let root = self.root.display().to_string();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect();
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = self.dir.path();
    }
}

/// Pids of processes whose arguments are `<exe> netd --root <netd_root>`.
fn netd_pids(netd_root: &Path) -> Vec<i32> {
    let want = netd_root.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.len() >= 4
                    && args[1] == b"netd"
                    && args[2] == b"--root"
                    && args[3] == want.as_bytes()
            })
        })
        .collect()
}

fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let mounts = cgroup::mounts().expect("cgroup mounts");
    cgroup::dirs(&mounts, Path::new(path))
        .expect("dirs")
        .into_iter()
        .filter(|d| d.exists())
        .collect()
}

#[test]
fn containers_of_a_sandbox_share_localhost_and_removal_leaves_nothing() {
    let Some(mut env) = Env::new() else { return };
    let net = env.network();
    let name = unique("sb");
    let spec = SandboxSpec {
        name: name.clone(),
        network: Some(net.clone()),
        cpu_units: Some(512),
        memory_bytes: Some(256 << 20),
        storage_bytes: None,
    };
    let t = Instant::now();
    let info = env.sandbox(&spec);
    let create = t.elapsed();
    let att = info.network.clone().expect("network attachment");
    assert_eq!(att.network, net);
    assert!(berth_engine::network::netns_mounted(&att.netns));
    // Idempotent: the same sandbox again, and found by name and in the list.
    assert_eq!(env.engine.create_sandbox(&spec).expect("again"), info);
    assert_eq!(env.engine.sandbox(&name).expect("by name"), info);
    assert!(env
        .engine
        .sandboxes()
        .expect("list")
        .iter()
        .any(|s| s.name == name));

    let server = env.run(
        &name,
        &["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
    );
    let client = env.run(
        &name,
        &[
            "sh",
            "-c",
            "for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.1; done; exit 1",
        ],
    );
    let exit = env.wait(&client, 30);
    assert_eq!(exit.exit_code, 0, "client log: {}", env.log(&client));
    assert!(env.log(&client).contains("hello over localhost"));
    // The containers' cgroups are children of the sandbox's.
    let server_cg = format!("{}/{server}", info.cgroups_path);
    assert!(!cgroup_dirs(&server_cg).is_empty(), "{server_cg}");
    // Publishing and a network of its own are refused in a networked sandbox.
    let refused = env.engine.run(&RunSpec {
        image: IMAGE.into(),
        publish: vec!["8081:80".into()],
        detach: true,
        sandbox: Some(name.clone()),
        ..Default::default()
    });
    assert!(refused.is_err(), "publish in a sandbox must be refused");
    // Running containers keep the sandbox.
    assert!(env.engine.remove_sandbox(&name).is_err());

    env.engine.remove(&server, true).expect("rm server");
    env.engine.remove(&client, true).expect("rm client");
    let veth = berth_net::host_veth_name(&att.network_id, &format!("sandbox-{name}"));
    assert!(Path::new("/sys/class/net").join(&veth).exists(), "{veth}");
    let t = Instant::now();
    env.engine.remove_sandbox(&name).expect("remove");
    let remove = t.elapsed();
    eprintln!("sandbox with network: create {create:?}, remove {remove:?}");
    assert!(!berth_engine::network::netns_mounted(&att.netns));
    assert!(!att.netns.exists());
    assert!(!Path::new("/sys/class/net").join(&veth).exists(), "{veth}");
    assert!(cgroup_dirs(&info.cgroups_path).is_empty());
    assert!(matches!(
        env.engine.sandbox(&name),
        Err(berth_engine::ContainerError::NoSuchSandbox(_))
    ));
    let store = env.engine.network_store().expect("store");
    let n = store.get(&net).expect("net");
    assert!(store.endpoints(&n).expect("endpoints").is_empty());
    // Idempotent.
    env.engine.remove_sandbox(&name).expect("remove again");
}

#[test]
fn sandbox_limits_are_in_its_cgroup_and_bind_its_containers() {
    let Some(mut env) = Env::new() else { return };
    let name = unique("sb");
    let t = Instant::now();
    let info = env.sandbox(&SandboxSpec {
        name: name.clone(),
        network: None,
        cpu_units: Some(512),
        memory_bytes: Some(32 << 20),
        storage_bytes: None,
    });
    eprintln!("sandbox without network: create {:?}", t.elapsed());
    assert!(info.network.is_none());
    let mounts = cgroup::mounts().expect("mounts");
    let limits =
        cgroup::read_parent_limits(&mounts, Path::new(&info.cgroups_path)).expect("limits");
    assert_eq!(limits.memory_bytes, Some(32 << 20));
    assert_eq!(limits.cpu_quota_us, Some(50_000));

    // A hog within its own (absent) limit but above the sandbox's is OOM-killed.
    let hog = env.run(
        &name,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    );
    let exit = env.wait(&hog, 30);
    assert!(exit.oom_killed, "{exit:?}, log: {}", env.log(&hog));
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    // A container that only sleeps and is stopped is not.
    let sleeper = env.run(&name, &["sleep", "30"]);
    let info2 = env
        .engine
        .stop(&sleeper, Some(Duration::from_secs(1)))
        .expect("stop");
    match info2.state {
        berth_engine::ContainerState::Exited(e) => assert!(!e.oom_killed, "{e:?}"),
        s => panic!("{s:?}"),
    }
    env.engine.remove(&hog, true).expect("rm");
    env.engine.remove(&sleeper, true).expect("rm");
    let t = Instant::now();
    env.engine.remove_sandbox(&name).expect("remove");
    eprintln!("sandbox without network: remove {:?}", t.elapsed());
    assert!(cgroup_dirs(&info.cgroups_path).is_empty());
}

#[test]
fn ephemeral_storage_bounds_what_the_containers_write() {
    let Some(mut env) = Env::new() else { return };
    let name = unique("sb");
    let spec = SandboxSpec {
        name: name.clone(),
        storage_bytes: Some(64 << 20),
        ..Default::default()
    };
    // The first one formats the template; the next ones only copy and mount it.
    let info = env.sandbox(&spec);
    let other = unique("sb");
    let t = std::time::Instant::now();
    let info2 = env.sandbox(&SandboxSpec {
        name: other.clone(),
        ..spec.clone()
    });
    let with_storage = t.elapsed();
    let t = std::time::Instant::now();
    let plain = unique("sb");
    env.sandbox(&SandboxSpec {
        name: plain.clone(),
        ..Default::default()
    });
    eprintln!(
        "sandbox create: with 64 MiB ephemeral storage {with_storage:?}, without {:?}",
        t.elapsed()
    );
    let scratch = info.scratch.clone().expect("scratch");
    // A writer of 100 MiB fails for want of space; the other sandbox's storage is its own.
    let hog = env.run(
        &name,
        &["dd", "if=/dev/zero", "of=/big", "bs=1M", "count=100"],
    );
    let exit = env.wait(&hog, 30);
    assert_ne!(exit.exit_code, 0, "{exit:?}");
    assert!(
        env.log(&hog).contains("No space left"),
        "log: {}",
        env.log(&hog)
    );
    assert!(scratch.join(&hog).join("upper").exists());
    let ok = env.run(
        &other,
        &["dd", "if=/dev/zero", "of=/small", "bs=1M", "count=8"],
    );
    assert_eq!(env.wait(&ok, 30).exit_code, 0, "{}", env.log(&ok));
    env.engine.remove(&hog, true).expect("rm");
    assert!(!scratch.join(&hog).exists());
    env.engine.remove(&ok, true).expect("rm");
    let t = std::time::Instant::now();
    env.engine.remove_sandbox(&name).expect("remove");
    eprintln!("sandbox remove with ephemeral storage: {:?}", t.elapsed());
    env.engine.remove_sandbox(&other).expect("remove");
    env.engine.remove_sandbox(&plain).expect("remove");
    for s in [&info, &info2] {
        let dir = s.scratch.as_ref().expect("scratch");
        assert!(!dir.exists(), "{}", dir.display());
    }
    let loops = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!loops.contains(&name), "{loops}");
    let lo = Command::new("losetup").arg("-a").output().expect("losetup");
    let lo = String::from_utf8_lossy(&lo.stdout);
    assert!(!lo.contains(&name) && !lo.contains(&other), "{lo}");
}

/// Fargate's default (20 GiB): the file system has that size, the image stays sparse, and
/// the per-sandbox start cost (after the one-time template) is printed.
#[test]
fn ephemeral_storage_of_20_gib_is_sparse_and_cheap_to_start() {
    let Some(mut env) = Env::new() else { return };
    let bytes = 20u64 << 30;
    let mut times = Vec::new();
    let mut infos = Vec::new();
    for i in 0..6 {
        let name = unique("sb");
        let t = Instant::now();
        let info = env.sandbox(&SandboxSpec {
            name,
            storage_bytes: Some(bytes),
            ..Default::default()
        });
        if i > 0 {
            times.push(t.elapsed());
        }
        infos.push(info);
    }
    times.sort();
    eprintln!(
        "20 GiB ephemeral storage: sandbox create (template ready) median {:?}, min {:?}, max {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    let scratch = infos[0].scratch.clone().expect("scratch");
    let st = nix::sys::statvfs::statvfs(&scratch).expect("statvfs");
    let size = st.blocks() * st.fragment_size();
    assert!(size > (19u64 << 30) && size <= bytes, "{size}");
    use std::os::unix::fs::MetadataExt;
    let image = scratch.with_file_name("scratch.img");
    let allocated = std::fs::metadata(&image).expect("image").blocks() * 512;
    assert!(allocated < 64 << 20, "{allocated} bytes allocated");
    let mut removes = Vec::new();
    for info in &infos {
        let t = Instant::now();
        env.engine.remove_sandbox(&info.name).expect("remove");
        removes.push(t.elapsed());
        assert!(!image.exists() || info.name != infos[0].name);
    }
    removes.sort();
    eprintln!(
        "20 GiB ephemeral storage: sandbox remove median {:?}",
        removes[removes.len() / 2]
    );
}
