//! Size-limited writable storage of a sandbox (Fargate's ephemeral storage): a sparse ext4
//! image per sandbox, loop-mounted on `sandboxes/<name>/scratch/`, which holds the overlay
//! upper and work directories of its containers, so that everything they write together is
//! bounded by the image's size.
//!
//! Formatting per sandbox costs 45–80 ms here (mkfs.ext4), so a template per size is
//! formatted once (`scratch-templates/<bytes>.img`, without a journal, lazy inode tables) and
//! each sandbox gets a sparse copy of its few allocated MiB (SEEK_DATA/SEEK_HOLE +
//! copy_file_range, ~3 ms), attached with one `LOOP_CONFIGURE` ioctl (autoclear) and mounted
//! with `noinit_itable` (no background zeroing of the inode tables): ~20 ms in all.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{lseek, Whence};

use crate::container::ContainerError;
use crate::{fsutil, Engine};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// The smallest image (mkfs.ext4 and overlay need some room).
pub const MIN_SCRATCH_BYTES: u64 = 16 << 20;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn errno_err(what: &'static str, path: &Path, e: Errno) -> ContainerError {
    ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Copies the allocated ranges of `src` into a new sparse file `dst` of the same size.
fn sparse_copy(src: &Path, dst: &Path) -> Result<(), ContainerError> {
    let input = File::open(src).map_err(io_err("open", src))?;
    let size = input.metadata().map_err(io_err("stat", src))?.len();
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_err("create", dst))?;
    output.set_len(size).map_err(io_err("truncate", dst))?;
    let size = i64::try_from(size)
        .map_err(|_| io_err("copy", src)(io::Error::new(io::ErrorKind::InvalidData, "too big")))?;
    let mut off: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while off < size {
        let data = match lseek(input.as_raw_fd(), off, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(errno_err("seek", src, e)),
        };
        let hole = lseek(input.as_raw_fd(), data, Whence::SeekHole)
            .map_err(|e| errno_err("seek", src, e))?;
        let mut pos = u64::try_from(data).unwrap_or(0);
        let end = u64::try_from(hole).unwrap_or(0);
        while pos < end {
            let len = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = input
                .read_at(&mut buf[..len], pos)
                .map_err(io_err("read", src))?;
            if n == 0 {
                break;
            }
            output
                .write_all_at(&buf[..n], pos)
                .map_err(io_err("write", dst))?;
            pos += n as u64;
        }
        off = hole;
    }
    Ok(())
}

/// `LOOP_CTL_GET_FREE`: the number of a free loop device (created when needed).
#[allow(unsafe_code)]
fn loop_get_free(ctl: &File) -> io::Result<i32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// `LOOP_CONFIGURE`: attaches the backing file with the flags of `cfg` in one call.
#[allow(unsafe_code)]
fn loop_configure(dev: &File, cfg: &LoopConfig) -> io::Result<()> {
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `LoopConfig` is laid out as
    // (repr(C), the kernel's field order and sizes); the pointer is valid for the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, cfg as *const LoopConfig) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `LOOP_CLR_FD`: detaches the backing file (after a failed mount).
#[allow(unsafe_code)]
fn loop_clear(dev: &File) {
    // SAFETY: LOOP_CLR_FD takes no argument; it only affects the device `dev` refers to.
    let _ = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
}

/// Attaches `image` to a free loop device (autoclear: detached when unmounted) and mounts it
/// on `target`.
fn loop_mount(image: &Path, target: &Path) -> Result<(), ContainerError> {
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctl_path)
        .map_err(io_err("open", ctl_path))?;
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io_err("open", image))?;
    // Another process may take the device between GET_FREE and CONFIGURE: try again.
    for _ in 0..16 {
        let n = loop_get_free(&ctl).map_err(io_err("allocate a loop device for", image))?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopdev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(io_err("open", &dev))?;
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        let name = image.as_os_str().as_encoded_bytes();
        let k = name.len().min(63);
        info.lo_file_name[..k].copy_from_slice(&name[..k]);
        let cfg = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or(u32::MAX),
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        if let Err(e) = loop_configure(&loopdev, &cfg) {
            if e.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(io_err("configure", &dev)(e));
        }
        let mounted = mount(
            Some(dev.as_path()),
            target,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("noinit_itable"),
        );
        if let Err(e) = mounted {
            loop_clear(&loopdev);
            return Err(errno_err("mount", target, e));
        }
        return Ok(());
    }
    Err(io_err("allocate a loop device for", image)(io::Error::new(
        io::ErrorKind::ResourceBusy,
        "every free loop device was taken meanwhile",
    )))
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (fs::metadata(path), path.parent()) else {
        return false;
    };
    fs::metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}

impl Engine {
    /// The formatted template image of `bytes` (made once, under a lock).
    fn scratch_template(&self, bytes: u64) -> Result<PathBuf, ContainerError> {
        let dir = self.root.join("scratch-templates");
        let path = dir.join(format!("{bytes}.img"));
        if path.exists() {
            return Ok(path);
        }
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let lock_path = dir.join(".lock");
        let _lock = fsutil::lock(&lock_path).map_err(io_err("lock", &lock_path))?;
        if path.exists() {
            return Ok(path);
        }
        let tmp = dir.join(format!(".{bytes}.img.tmp"));
        let _ = fs::remove_file(&tmp);
        let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.set_len(bytes).map_err(io_err("truncate", &tmp))?;
        drop(f);
        let out = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                "-O",
                "^has_journal",
                "-m",
                "0",
            ])
            .arg(&tmp)
            .output()
            .map_err(io_err("run mkfs.ext4 on", &tmp))?;
        if !out.status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(ContainerError::Sandbox(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &dir))?;
        tracing::info!(bytes, path = %path.display(), "formatted an ephemeral storage template");
        Ok(path)
    }

    /// Makes `dir/scratch.img` (a copy of the template of `bytes`) and mounts it on
    /// `dir/scratch`; returns the mount point.
    pub(crate) fn mount_scratch(&self, dir: &Path, bytes: u64) -> Result<PathBuf, ContainerError> {
        if bytes < MIN_SCRATCH_BYTES {
            return Err(ContainerError::InvalidOption(format!(
                "ephemeral storage of {bytes} bytes is below the minimum of {MIN_SCRATCH_BYTES}"
            )));
        }
        let template = self.scratch_template(bytes)?;
        let image = dir.join("scratch.img");
        let target = dir.join("scratch");
        let _ = fs::remove_file(&image);
        sparse_copy(&template, &image)?;
        fs::create_dir_all(&target).map_err(io_err("create", &target))?;
        loop_mount(&image, &target)?;
        Ok(target)
    }

    /// Unmounts a sandbox's scratch (its loop device goes with it); idempotent.
    pub(crate) fn unmount_scratch(&self, target: &Path) -> Result<(), ContainerError> {
        for _ in 0..8 {
            if !is_mount_point(target) {
                return Ok(());
            }
            match umount2(target, MntFlags::empty()) {
                Ok(()) => {}
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
                Err(Errno::EBUSY) => {
                    umount2(target, MntFlags::MNT_DETACH)
                        .map_err(|e| errno_err("unmount", target, e))?;
                }
                Err(e) => return Err(errno_err("unmount", target, e)),
            }
        }
        Ok(())
    }
}
