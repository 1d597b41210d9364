//! Child processes pacfleet starts and may have to stop (git for the status repository, a
//! pool's health commands): each runs in a process group of its own, so that stopping it stops
//! whatever it started too (ssh, a remote helper, a script's children). Owns that kill.

/// Kills `child`'s process group (the child was started with `process_group(0)`, so the
/// group's id is its pid), then the child itself, and reaps it.
pub fn kill_group(child: &mut std::process::Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no
        // memory. The group is the child's own (`process_group(0)`), and the child is not
        // reaped yet, so the id cannot have been reused.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
