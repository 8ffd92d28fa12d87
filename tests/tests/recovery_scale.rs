//! Recovery at scale: 200 running containers, berthd SIGKILLed, three of
//! their shims killed while it is down. After the restart `ctr task ls`
//! lists the 197 survivors RUNNING with their pids and the killed three
//! are gone, and the dead shims do not hold the others up (recovery fails
//! fast on them). Run as root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CONTAINERS: usize = 200;
const WORKERS: usize = 4;

/// A generous bound: recovery that waited on each dead shim (a retry
/// loop, a long dial timeout) would take far longer than this.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

fn id(n: usize) -> String {
    format!("scale-{n:03}")
}

/// Runs `each(ctr, n)` for every container number, spread over threads.
fn in_parallel(daemon: &Daemon, each: impl Fn(&Ctr, usize) + Sync) {
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let ctr = daemon.ctr();
            let each = &each;
            scope.spawn(move || {
                for n in (worker..CONTAINERS).step_by(WORKERS) {
                    each(&ctr, n);
                }
            });
        }
    });
}

/// `ctr task ls` as id → (pid, status).
fn tasks(ctr: &Ctr) -> BTreeMap<String, (String, String)> {
    ctr.ok(&["task", "ls"])
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 3).then(|| (fields[0].to_string(), (fields[1].to_string(), fields[2].to_string())))
        })
        .collect()
}

fn shim_pid(daemon: &Daemon, id: &str) -> i32 {
    std::fs::read_to_string(daemon.state.join("tasks/default").join(id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn two_hundred_containers_are_taken_back_and_dead_shims_fail_fast() {
    let (mut daemon, ctr, image) = Daemon::with_busybox();
    in_parallel(&daemon, |ctr, n| {
        ctr.ok(&["run", "-d", &image, &id(n), "sleep", "100000"]);
    });
    let before = tasks(&ctr);
    assert_eq!(before.len(), CONTAINERS, "every container runs");
    assert!(before.values().all(|(_, status)| status == "RUNNING"));

    daemon.kill();
    let victims = [id(7), id(100), id(199)];
    for victim in &victims {
        kill(Pid::from_raw(shim_pid(&daemon, victim)), Signal::SIGKILL).unwrap();
    }

    let restarted = Instant::now();
    daemon.relaunch();
    let mut expected = before.clone();
    for victim in &victims {
        expected.remove(victim);
    }
    let after = tasks(&ctr);
    let took = restarted.elapsed();
    assert_eq!(
        after, expected,
        "survivors RUNNING with the same pids, the killed three gone"
    );
    assert!(
        took < RECOVERY_LIMIT,
        "a restart with {CONTAINERS} containers took {took:?} to a correct task ls"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{CONTAINERS} containers, 3 dead shims: restart to a correct task ls in {took:?}");
    }

    // Every container is still there, and the survivors still answer.
    assert_eq!(ctr.ok(&["containers", "ls", "-q"]).lines().count(), CONTAINERS);
    assert_eq!(
        ctr.ok(&["task", "exec", "--exec-id", "e1", &id(1), "echo", "alive"]),
        "alive\n"
    );
    in_parallel(&daemon, |ctr, n| {
        let name = id(n);
        if !victims.contains(&name) {
            ctr.ok(&["task", "rm", "--force", &name]);
        }
        ctr.ok(&["container", "rm", &name]);
    });
}
