//! Links the `berth` binary as a non-PIE executable (as Go links dockerd and containerd): a PIE
//! binary of this size carries ~50,000 relative relocations that the loader applies in every
//! process, dirtying ~1 MB of otherwise shared pages in each per-container shim and slowing
//! every exec of `berth` (CLI, shim, `berth exec`).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
