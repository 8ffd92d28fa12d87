//! Descriptors berth-runc inherited from whoever ran it (a shell's or a
//! test harness's files): none of them may reach a container's init or an
//! exec'd process, but those `--preserve-fds` (and `LISTEN_FDS`) name.

use std::os::fd::RawFd;

/// How many descriptors after stderr are the caller's to pass on.
pub fn passed_on(preserve_fds: i32) -> i32 {
    let listen_fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    preserve_fds.max(0) + listen_fds.max(0)
}

/// Marks every open descriptor from `3 + passed_on` up close-on-exec, so
/// only what the runtime itself hands over crosses into the container.
pub fn close_on_exec_beyond(passed_on: i32) {
    let first: RawFd = 3 + passed_on;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number only sets a flag; one that
        // closed meanwhile (the directory listing's own) fails harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
