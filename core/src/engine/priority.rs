//! Lowering the engine's CPU priority. On a machine whose cores llama.cpp keeps busy, the
//! gateway's request handling waits behind decoding; a higher niceness on the engine thread
//! (inherited by the llama.cpp/OpenMP threads it starts) lets the kernel run request handling
//! first, while decoding still gets every cycle nobody else wants.

/// Adds `nice` to the calling thread's niceness (Linux: niceness is per thread, and threads
/// created later by this one inherit it). Failures are logged, never fatal.
pub fn lower_this_thread(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and returns the calling thread's id.
        let tid = unsafe { libc::gettid() };
        let who = libc::id_t::try_from(tid).unwrap_or(0);
        // SAFETY: reading and setting the priority of this thread (PRIO_PROCESS with a thread id
        // addresses one thread on Linux); no memory is passed. getpriority can legitimately
        // return -1, so errno is cleared first and checked after.
        let result = unsafe {
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, who);
            if current == -1 && *libc::__errno_location() != 0 {
                -1
            } else {
                libc::setpriority(libc::PRIO_PROCESS, who, (current + nice).min(19))
            }
        };
        if result != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "could not lower the engine thread's priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::debug!(nice, "engine niceness is only applied on Linux");
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        // SAFETY: as in `lower_this_thread`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn the_thread_and_the_threads_it_starts_get_the_niceness() {
        let (base, own, child) = std::thread::spawn(|| {
            let base = own_nice();
            lower_this_thread(3);
            let child = std::thread::spawn(own_nice).join().expect("child");
            (base, own_nice(), child)
        })
        .join()
        .expect("thread");
        assert_eq!(own, (base + 3).min(19));
        assert_eq!(child, own, "inherited by threads started afterwards");
        let untouched = std::thread::spawn(own_nice).join().expect("other");
        assert_eq!(untouched, base, "other threads keep their priority");
    }
}
