//! An authentication flood against one user (issue #10, finding 12): 8 attackers guessing
//! alice's password in `tandem-auth-file`, each from its own address, while bob connects again
//! and again from another. Bob must keep getting in (the plugin is busy, not broken: its circuit
//! must not open for everyone), and the attackers must be throttled (refused without a hash).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_tests::passwd::argon2id;
use tandem_tests::source::connect_as_from;
use tandem_tests::{DEADLINE, Tandem, binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_flood_on_one_user_neither_locks_out_others_nor_opens_the_circuit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("passwd"),
        format!(
            "alice:{}\nbob:{}\n",
            // Alice's hash costs about four times `passwd`'s default (m=19456 KiB, t=2): every
            // wrong guess takes a core for a few hundred milliseconds, so 8 attackers saturate
            // the plugin's CPUs, as a real flood does on a bigger machine. Bob's is the default.
            argon2id("alice's secret", b"alice-salt-01234", 65536, 3),
            argon2id("bob pw", b"bob-salt-0123456", 19456, 2)
        ),
    )
    .unwrap();
    // The README's advice for this plugin: a 1s deadline. Everything else at its default:
    // failure_threshold 5, max_concurrency 256, throttle 5 failures per user / 20 per address.
    let broker = Tandem::start_config(&format!(
        r#"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  file:
    endpoint: unix://{d}/auth.sock
    command: [{bin}]
    timeout: 1s
    config:
      password_file: {d}/passwd
auth:
  plugins: [file]
"#,
        bin = binary("tandem-auth-file").display()
    ));
    let a = broker.addr;
    let home: IpAddr = [127, 0, 0, 1].into();
    connect_as_from(a, home, "bob-0", "bob", "bob pw")
        .await
        .expect("bob connects before the flood");

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for i in 0..8u8 {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        let from: IpAddr = [127, 0, 0, 2 + i].into();
        attackers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let guess = format!("guess-{i}-{n}");
                let got = connect_as_from(a, from, &format!("mallory-{i}"), "alice", &guess).await;
                assert!(got.is_err(), "a wrong password was let in");
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Bob connects again and again while the flood runs, for long enough that an unfixed
    // plugin has passed its deadline failure_threshold times over.
    let started = Instant::now();
    let mut bob = 0;
    while started.elapsed() < Duration::from_secs(6) || attempts.load(Ordering::Relaxed) < 100 {
        assert!(
            started.elapsed() < 6 * DEADLINE,
            "the flood made too few attempts"
        );
        bob += 1;
        let got = connect_as_from(a, home, &format!("bob-{bob}"), "bob", "bob pw").await;
        assert!(
            got.is_ok(),
            "bob's connect #{bob} was refused during the flood ({:?}) after {} attacker attempts; broker log tail:\n{}",
            got.as_ref().err(),
            attempts.load(Ordering::Relaxed),
            broker
                .logs()
                .iter()
                .rev()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        t.await.unwrap();
    }

    // The attackers were throttled: refused without a hash once alice had 5 failures, so most
    // of the flood cost the plugin nothing.
    assert!(
        broker
            .wait_log("too many failed logins for this username", DEADLINE)
            .is_some()
    );
    let throttled = broker.count_log("throttled: too many failed logins for this username");
    let total = attempts.load(Ordering::Relaxed) as usize;
    assert!(
        throttled * 2 >= total,
        "most attempts were refused without hashing: {throttled} of {total}"
    );
    // Even alice's right password is refused while her username is throttled (from a new
    // address): the throttle answers before any verification.
    let late: IpAddr = [127, 0, 0, 20].into();
    let refused = connect_as_from(a, late, "late-alice", "alice", "alice's secret")
        .await
        .err();
    assert!(refused.is_some(), "a throttled username is refused");
    assert!(
        broker
            .wait_log_all(
                &[
                    "late-alice",
                    "throttled: too many failed logins for this username"
                ],
                DEADLINE
            )
            .is_some()
    );
    // And the plugin was never taken for broken.
    assert_eq!(broker.count_log("replica marked down"), 0);
    assert_eq!(broker.count_log("circuit_open"), 0);
    assert_eq!(broker.count_log("panicked"), 0);
}
