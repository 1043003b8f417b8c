//! `--pooler-mode transaction` behind a real PgBouncer (Debian's) in transaction mode, which the
//! test starts in front of the test database: what Supavisor's port 6543 does to a client. A
//! transaction pooler hands each transaction to whichever server connection is free, so named
//! statements prepared on one are unknown on the next, a session setting leaks to the next
//! client, and startup `options` are refused. bin/test also runs the whole relay suite through
//! one (`VOXANNE_RELAY_TEST_POOLER`).
//!
//! Needs pgbouncer (bin/lib.sh installs it) and root (it runs as `postgres`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;

/// A PgBouncer in transaction mode in front of the test database with `server_connections` for
/// all its clients; stopped on drop.
struct Bouncer {
    dir: Scratch,
    port: u16,
}

impl Bouncer {
    fn start(name: &str, server_connections: u32) -> Bouncer {
        let target: tokio_postgres::Config = database_url().parse().expect("a libpq connection string");
        let host = match &target.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        };
        let server_port = target.get_ports().first().copied().unwrap_or(5432);
        let dir = Scratch::new(&format!("pooler-{name}"));
        let port = free_port();
        std::fs::write(dir.path.join("users.txt"), "\"postgres\" \"\"\n\"voxanne_relay\" \"\"\n").unwrap();
        std::fs::write(
            dir.path.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir = {dir}\nauth_type = trust\nauth_file = {dir}/users.txt\n\
                 admin_users = postgres\npool_mode = transaction\ndefault_pool_size = {server_connections}\n\
                 max_db_connections = {server_connections}\nmax_client_conn = 200\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.path.display()
            ),
        )
        .unwrap();
        as_postgres(&["pgbouncer", "-d", &dir.file("pgbouncer.ini")]);
        let bouncer = Bouncer { dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer listens on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// A connection string through the pooler to the test database.
    fn url(&self) -> String {
        let target: tokio_postgres::Config = database_url().parse().unwrap();
        format!("host=127.0.0.1 port={} user=postgres dbname={}", self.port, target.get_dbname().unwrap())
    }

    /// One row of PgBouncer's admin console: `SHOW <what>`, as name → value pairs.
    async fn show(&self, what: &str) -> Vec<Vec<(String, String)>> {
        let admin = db_at(&format!("host=127.0.0.1 port={} user=postgres dbname=pgbouncer", self.port)).await;
        let messages = admin.simple_query(&format!("SHOW {what}")).await.expect("the admin console answers");
        messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| (row.columns()[i].name().to_string(), row.get(i).unwrap_or("").to_string()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// `SHOW statement_timeout` on a plain client of the pooler: what a server connection carries
/// into the next client's transactions.
async fn statement_timeout_seen_by_the_next_client(bouncer: &Bouncer) -> String {
    let client = db_at(&bouncer.url()).await;
    let messages = client.simple_query("SHOW statement_timeout").await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test]
async fn transaction_mode_carries_every_webhook_over_two_server_connections() {
    let bouncer = Bouncer::start("many", 2);
    let db = db().await;
    let t = tenant(&db).await;
    let relay =
        Relay::start(&bouncer.url(), &["--pooler-mode", "transaction", "--pool-size", "8", "--max-in-flight", "256"])
            .await;

    let calls_sent: Vec<String> = (0..100).map(|_| new_call_id()).collect();
    // each call twice (ringing, then in-progress): 200 concurrent webhooks, 8 relay sessions
    // multiplexed over 2 server connections, so consecutive statements of a relay session run
    // on different server connections
    let deliveries = calls_sent.iter().flat_map(|call| {
        ["ringing", "in-progress"].map(|status| {
            let (http, url, body) =
                (relay.http.clone(), relay.webhook_url(), status_update(&t.assistant, call, status));
            tokio::spawn(async move {
                let response = http.post(url).header("x-vapi-secret", SECRET).body(body).send().await.unwrap();
                answer(response).await
            })
        })
    });
    let answers = futures_util::future::join_all(deliveries.collect::<Vec<_>>()).await;
    for result in answers {
        let (status, json) = result.unwrap();
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(["applied", "stale"].contains(&json["outcome"].as_str().unwrap()), "{json}");
    }
    let stored = count(
        &db,
        "SELECT count(*) FROM voxanne.calls WHERE vapi_call_id = ANY($1) AND status = 'in-progress'",
        &[&calls_sent],
    )
    .await;
    assert_eq!(stored, 100, "every call stored once, at its latest status");

    let servers = bouncer.show("SERVERS").await;
    assert!(!servers.is_empty() && servers.len() <= 2, "at most two server connections: {servers:?}");
    let stats = bouncer.show("STATS").await;
    let transactions: u64 = stats
        .iter()
        .flat_map(|row| row.iter().filter(|(k, _)| k == "total_xact_count").map(|(_, v)| v.parse::<u64>().unwrap()))
        .sum();
    assert!(transactions >= 200, "each webhook its own transaction through the pooler: {stats:?}");
}

#[tokio::test]
async fn transaction_mode_sets_the_statement_timeout_locally_and_leaks_it_to_no_other_client() {
    let bouncer = Bouncer::start("timeout", 1);
    let db = db().await;
    let t = tenant(&db).await;
    let relay = Relay::start(&bouncer.url(), &["--pooler-mode", "transaction", "--statement-timeout", "300ms"]).await;

    // the relay's SET LOCAL bounds its statement on the pooled server connection...
    let call = assert_a_blocked_delivery_times_out(&relay, &db, &t).await;

    // ...and, once applied, ends with its transaction: the one server connection, which the relay
    // just used, shows the next client the server's default
    let (status, json) = relay.deliver_json(&status_update(&t.assistant, &call, "ringing")).await;
    assert_eq!((status, json["outcome"].as_str()), (StatusCode::OK, Some("applied")), "{json}");
    assert_eq!(statement_timeout_seen_by_the_next_client(&bouncer).await, "0");
}

#[tokio::test]
async fn session_mode_through_a_transaction_pooler_is_refused_at_connect_and_writes_nothing() {
    // session mode sends its statement_timeout as a startup option, which PgBouncer refuses
    // (08P01 unsupported startup parameter): a misconfiguration that fails loudly at once rather
    // than statements prepared on one server connection and run on another
    let bouncer = Bouncer::start("session", 2);
    let db = db().await;
    let t = tenant(&db).await;
    let relay = Relay::start(&bouncer.url(), &["--pooler-mode", "session"]).await;

    let call = new_call_id();
    let (status, body) = relay.deliver(&status_update(&t.assistant, &call, "ringing")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(relay.get("/readyz").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls(&db, &call).await, 0);
    let log = std::fs::read_to_string(bouncer.dir.path.join("pgbouncer.log")).unwrap();
    assert!(log.contains("unsupported startup parameter"), "{log}");
}
