//! At the descriptor limit the accept loop backs off instead of spinning, and the
//! client it could not accept is served once descriptors free up. Its own binary:
//! lowering RLIMIT_NOFILE affects the whole process.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use control::client::ApiVersion;
use control::testing::TestDevice;

/// CPU time (user + system) this process has used, all threads.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

/// Lowers the soft limit of open files to `soft`; returns the old limits.
fn set_soft_nofile(soft: u64) -> libc::rlimit {
    let mut old: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit/setrlimit read and write the structs they are given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let new = libc::rlimit {
        rlim_cur: soft.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
    old
}

/// Opens files until the process is out of descriptors, then closes one: the next
/// descriptor anyone takes is the last.
fn hog_all_but_one() -> Vec<std::fs::File> {
    let mut hogs = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hogs.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("opening a hog: {e}"),
        }
    }
    hogs.pop();
    hogs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_accept_backs_off_and_serves_again_after() {
    let dev = TestDevice::start("").await;
    let addr = dev.running.as_ref().unwrap().local_addrs()[0];
    let counters = &dev.device().counters;
    let old = set_soft_nofile(open_fds() + 64);

    let hogs = hog_all_but_one();
    // This client takes the last descriptor: the kernel completes its connection,
    // and the device's accept fails with EMFILE while it waits in the backlog.
    let waiting = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect with the last descriptor");
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.accept_fd_limit.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "accept never hit the limit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two seconds at the limit: a loop retrying at once would burn most of a core.
    let (cpu, wall) = (process_cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = process_cpu() - cpu;
    let share = used.as_secs_f64() / wall.elapsed().as_secs_f64();
    assert!(
        share < 0.3,
        "the process used {used:?} of CPU in {:?} at the descriptor limit",
        wall.elapsed()
    );
    assert_eq!(
        counters.accept_fd_limit.load(Ordering::Relaxed),
        1,
        "one episode"
    );

    drop(hogs);
    // The client that waited is accepted and served TLS.
    let ca = dev.cert(control::certs::CA_CERT);
    common::tls::tls_over(waiting, &ca)
        .await
        .expect("the waiting client completes TLS");
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(
        c.get(1)
            .await
            .expect("a new client is served")
            .request_status,
        2
    );
    // SAFETY: restores the limits read above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    dev.stop().await;
}
