//! Two operator processes against one control plane: only the Lease holder works; after
//! `kill -9` of the leader the other takes over within the lease duration, and no hook is
//! duplicated.

mod support;

use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::Flavor;
use support::World;

const LEASE_SECONDS: u64 = 6;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn operator(w: &World, identity: &str, port: u16, debug: bool) -> tokio::process::Child {
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{}-{identity}.log", w.ns)))
        .expect("log file");
    w.operator_command()
        .args([
            &format!("--metrics-bind-address=127.0.0.1:{port}"),
            "--resync-period=4s",
            "--health-period=2s",
            "--leader-election-lease=bitbucket-webhook-operator",
            "--leader-election-namespace",
            &w.ns,
            &format!("--leader-election-duration={LEASE_SECONDS}"),
            &format!("--enable-debug-endpoints={debug}"),
        ])
        .env("POD_NAME", identity)
        .env("BBWO_LOG_LEVEL", "info")
        .stderr(log)
        .spawn()
        .expect("operator process")
}

fn holder(w: &World) -> String {
    w.kubectl(&[
        "get",
        "lease",
        "bitbucket-webhook-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .unwrap_or_default()
}

#[tokio::test]
async fn only_the_leader_works_and_a_standby_takes_over() {
    let w = World::standalone("leader", Flavor::DataCenter).await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = operator(&w, "replica-a", port_a, true);
    let mut b = operator(&w, "replica-b", port_b, true);
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/one", ""))
        .expect("apply");
    w.wait_ready("ci").await;
    let leader = holder(&w);
    assert!(
        leader == "replica-a" || leader == "replica-b",
        "a holder: {leader:?}"
    );
    assert_eq!(w.hooks().await.len(), 1);

    // Only the leader talks to Bitbucket: the standby's absence of writes shows in the
    // total, which is exactly one create.
    assert_eq!(w.writes().await, 1, "one create, by one replica");

    let (dead, survivor, standby) = if leader == "replica-a" {
        (&mut a, "replica-b", &mut b)
    } else {
        (&mut b, "replica-a", &mut a)
    };
    dead.start_kill().expect("kill -9 the leader");
    let _ = dead.wait().await;
    let killed = Instant::now();
    while holder(&w) != survivor {
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECONDS * 3 + 10),
            "no takeover after {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    println!(
        "takeover after kill -9 of the leader: {:.1}s (lease duration {LEASE_SECONDS}s)",
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + LEASE_SECONDS.div_ceil(3) + 3),
        "took {takeover:?}"
    );

    // The new leader works: an edit reaches Bitbucket, and there is still one hook.
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/two", ""))
        .expect("edit");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hooks = w.hooks().await;
        if hooks.len() == 1 && hooks[0]["url"] == "https://ci.example.com/two" {
            break;
        }
        assert!(hooks.len() <= 1, "duplicated: {hooks:?}");
        assert!(
            Instant::now() < deadline,
            "the new leader never applied the edit: {hooks:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        standby.try_wait().expect("status").is_none(),
        "the survivor keeps running"
    );

    // The survivor's endpoints: ready, and its log filter can change at run time.
    let port = if survivor == "replica-a" {
        port_a
    } else {
        port_b
    };
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let ready = http.get(url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let set = http
        .put(url("/debug/log-level"))
        .body("debug")
        .send()
        .await
        .expect("log level");
    assert_eq!(set.status().as_u16(), 200);
    let bad = http
        .put(url("/debug/log-level"))
        .body("no such=filter=")
        .send()
        .await
        .expect("log level");
    assert_eq!(
        bad.status().as_u16(),
        400,
        "{}",
        bad.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_releases_the_lease() {
    let w = World::standalone("handover", Flavor::DataCenter).await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = operator(&w, "replica-a", port_a, false);
    let mut b = operator(&w, "replica-b", port_b, false);
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/one", ""))
        .expect("apply");
    w.wait_ready("ci").await;
    // Without --enable-debug-endpoints nobody can change the logging over the network.
    for port in [port_a, port_b] {
        let answer = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{port}/debug/log-level"))
            .body("trace")
            .send()
            .await
            .expect("metrics port");
        assert_eq!(answer.status().as_u16(), 404, "debug endpoints are off");
    }
    let leader = holder(&w);
    let (first, survivor) = if leader == "replica-a" {
        (&mut a, "replica-b")
    } else {
        (&mut b, "replica-a")
    };
    let pid = first.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let sent = Instant::now();
    let exit = first.wait().await.expect("the leader exits on SIGTERM");
    assert!(exit.success(), "a clean exit: {exit:?}");
    // It released the Lease on the way out (the standby may not have looked yet).
    let released = holder(&w);
    assert!(
        released.is_empty() || released == survivor,
        "the Lease still names the stopped leader: {released:?}"
    );
    while holder(&w) != survivor {
        assert!(
            sent.elapsed() < Duration::from_secs(LEASE_SECONDS * 3),
            "no handover after {:?}",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "handover after SIGTERM of the leader: {:.1}s (lease duration {LEASE_SECONDS}s)",
        sent.elapsed().as_secs_f64()
    );
    assert_eq!(w.hooks().await.len(), 1);
}
