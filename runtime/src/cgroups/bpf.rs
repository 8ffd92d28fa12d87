//! Loading a device filter into the kernel and attaching it to a cgroup2
//! directory (cgroup v2 has no devices files: access is decided by an
//! eBPF program of type CGROUP_DEVICE).
//!
//! The new program is attached beside any old one, then the old ones are
//! detached, so there is never a moment with no filter.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::devices::filter_program;
use crate::error::{Error, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr`, as bytes: each command fills its own fields.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0u8; 128])
    }
    fn u32_at(&mut self, offset: usize, value: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, offset: usize, value: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }
    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0[offset..offset + 4].try_into().unwrap_or([0; 4]))
    }
}

fn bpf(command: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a 128-byte, 8-aligned buffer laid out as the kernel's
    // union bpf_attr for `command`; its size is passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr.0.as_mut_ptr(), size_of::<Attr>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: fd was just returned by the kernel and is owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads the filter for `rules`.
pub fn load(rules: &[LinuxDeviceCgroup]) -> Result<OwnedFd> {
    let program: Vec<u8> = filter_program(rules).iter().flat_map(|i| i.bytes()).collect();
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 << 10];
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_PROG_TYPE_CGROUP_DEVICE)
        .u32_at(4, (program.len() / 8) as u32)
        .u64_at(8, program.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        .u32_at(24, 1)
        .u32_at(28, log.len() as u32)
        .u64_at(32, log.as_mut_ptr() as u64);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let verifier = String::from_utf8_lossy(&log[..end]).trim().to_string();
            let mut err = Error::io("loading the device filter", "bpf", &e);
            if !verifier.is_empty() {
                err.detail = Some(verifier);
            }
            Err(err)
        }
    }
}

/// The ids of the device filters attached to a cgroup.
fn attached(cgroup: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = Attr::new();
    attr.u32_at(0, cgroup.as_raw_fd() as u32)
        .u32_at(4, BPF_CGROUP_DEVICE)
        .u64_at(16, ids.as_mut_ptr() as u64)
        .u32_at(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.read_u32(24) as usize);
    Ok(ids)
}

/// Attaches the filter for `rules` to the cgroup2 directory `dir`,
/// replacing the filters attached before.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let cgroup = std::fs::File::open(dir).map_err(|e| Error::io("opening cgroup", dir, &e))?;
    let cgroup = OwnedFd::from(cgroup);
    let old = attached(&cgroup).map_err(|e| Error::io("listing device filters", dir, &e))?;
    let program = load(rules)?;
    let mut attr = Attr::new();
    attr.u32_at(0, cgroup.as_raw_fd() as u32)
        .u32_at(4, program.as_raw_fd() as u32)
        .u32_at(8, BPF_CGROUP_DEVICE)
        .u32_at(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| Error::io("attaching the device filter", dir, &e))?;
    for id in old {
        let mut by_id = Attr::new();
        by_id.u32_at(0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) else {
            continue;
        };
        let old_program = owned(fd);
        let mut detach = Attr::new();
        detach
            .u32_at(0, cgroup.as_raw_fd() as u32)
            .u32_at(4, old_program.as_raw_fd() as u32)
            .u32_at(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut detach).map_err(|e| Error::io("detaching an old device filter", dir, &e))?;
    }
    Ok(())
}
