//! TLS from the relay to PostgreSQL, against a cluster of the test's own that takes only TLS
//! connections (`hostssl` in pg_hba.conf) with a certificate for `localhost` from a CA the test
//! makes (openssl). One cluster for every sslmode, started once.
//!
//! Needs the system PostgreSQL 15 with voxanne_ext installed (bin/lib.sh), openssl, root (the
//! server runs as `postgres`).

mod common;

use common::*;
use reqwest::StatusCode;

/// A cluster with `ssl = on` that refuses plain TCP connections.
struct TlsCluster(Cluster);

impl TlsCluster {
    fn start() -> TlsCluster {
        let dir = Scratch::new("tls");
        let port = free_port();
        let openssl = |args: &str| as_postgres(&[&["openssl"], &args.split(' ').collect::<Vec<_>>()[..]].concat());
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        for ca in ["ca", "other-ca"] {
            openssl(&format!(
                "req -x509 {ec} -days 2 -subj /CN=voxanne-test-{ca} -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign -keyout {} -out {}",
                dir.file(&format!("{ca}.key")),
                dir.file(&format!("{ca}.pem"))
            ));
        }
        std::fs::write(
            dir.path.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&format!(
            "req {ec} -subj /CN=localhost -keyout {} -out {}",
            dir.file("server.key"),
            dir.file("server.csr")
        ));
        openssl(&format!(
            "x509 -req -days 2 -in {} -CA {} -CAkey {} -CAcreateserial -extfile {} -out {}",
            dir.file("server.csr"),
            dir.file("ca.pem"),
            dir.file("ca.key"),
            dir.file("server.ext"),
            dir.file("server.pem")
        ));
        let conf = format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
            dir.file("server.pem"),
            dir.file("server.key")
        );
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n";
        let cluster = Cluster::init(dir, port, &conf, Some(hba));
        cluster.start();
        TlsCluster(cluster)
    }

    /// The relay's connection string over TCP to `host`, with `tls` settings.
    fn url(&self, host: &str, tls: &str) -> String {
        format!("host={host} port={} user=postgres dbname=postgres {tls}", self.0.port)
    }
}

/// A relay on `url`, its sessions named for this case.
async fn relay_on(url: &str, case: &str) -> (Relay, String) {
    let app_name = format!("tls-{case}-{}", uuid::Uuid::new_v4().simple());
    (Relay::start(url, &["--db-application-name", &app_name, "--pool-timeout", "2s"]).await, app_name)
}

/// Whether the relay's session `app_name` is encrypted, from the server's side.
async fn session_ssl(admin: &tokio_postgres::Client, app_name: &str) -> Option<bool> {
    admin
        .query_opt(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app_name],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Asserts /readyz is ready and the relay's session is encrypted.
async fn assert_ready_over_tls(relay: &Relay, admin: &tokio_postgres::Client, app_name: &str, case: &str) {
    let (status, json) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK, "{case}: {json}");
    assert_eq!(session_ssl(admin, app_name).await, Some(true), "{case}: the relay's session is TLS");
}

/// Asserts the relay cannot connect, and that the reason contains `why`.
async fn assert_refused(relay: &Relay, why: &str, case: &str) {
    let (status, json) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{case}: {json}");
    assert_eq!(json["reason"], "database unavailable", "{case}");
    let err = relay.state.db.extension_version().await.expect_err(case);
    let err = format!("{err:?}");
    assert!(err.contains(why), "{case}: refused for another reason: {err}");
}

#[tokio::test]
async fn sslmodes_connect_verify_and_refuse_as_libpq_does_against_a_tls_only_server() {
    let started = std::time::Instant::now();
    let cluster = TlsCluster::start();
    let admin = cluster.0.admin("postgres").await;
    admin.batch_execute(ROLES_AND_EXTENSION).await.unwrap();
    let ca = cluster.0.dir.file("ca.pem");
    let other_ca = cluster.0.dir.file("other-ca.pem");

    // verify-full with the server's CA, by the name on its certificate: ready, and a webhook
    // is applied through the encrypted session
    let (relay, app_name) =
        relay_on(&cluster.url("localhost", &format!("sslmode=verify-full sslrootcert={ca}")), "verify-full").await;
    assert_ready_over_tls(&relay, &admin, &app_name, "verify-full").await;
    let t = tenant(&admin).await;
    let call = new_call_id();
    let (status, json) = relay.deliver_json(&status_update(&t.assistant, &call, "ringing")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["outcome"], "applied", "{json}");
    assert_eq!(calls(&admin, &call).await, 1);
    assert_eq!(session_ssl(&admin, &app_name).await, Some(true));

    // the CA as --db-ca-file instead of sslrootcert
    let app_name = format!("tls-ca-flag-{}", uuid::Uuid::new_v4().simple());
    let relay = Relay::start(
        &cluster.url("localhost", "sslmode=verify-full"),
        &["--db-ca-file", &ca, "--db-application-name", &app_name],
    )
    .await;
    assert_ready_over_tls(&relay, &admin, &app_name, "verify-full, --db-ca-file").await;

    // verify-full by an address the certificate does not name
    let (relay, _) =
        relay_on(&cluster.url("127.0.0.1", &format!("sslmode=verify-full sslrootcert={ca}")), "wrong-name").await;
    assert_refused(&relay, "NotValidForName", "verify-full, wrong host name").await;

    // verify-ca checks the chain, not the name: the same address passes ...
    let (relay, app_name) =
        relay_on(&cluster.url("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")), "verify-ca").await;
    assert_ready_over_tls(&relay, &admin, &app_name, "verify-ca, name not checked").await;
    // ... but a certificate from another CA does not
    let (relay, _) =
        relay_on(&cluster.url("localhost", &format!("sslmode=verify-ca sslrootcert={other_ca}")), "other-ca").await;
    assert_refused(&relay, "UnknownIssuer", "verify-ca, another CA").await;

    // require: encrypted, nothing checked ...
    let (relay, app_name) = relay_on(&cluster.url("127.0.0.1", "sslmode=require"), "require").await;
    assert_ready_over_tls(&relay, &admin, &app_name, "require without a CA").await;
    // ... unless a CA file is given: then it checks the chain, as libpq does
    let (relay, _) =
        relay_on(&cluster.url("localhost", &format!("sslmode=require sslrootcert={other_ca}")), "require-ca").await;
    assert_refused(&relay, "UnknownIssuer", "require with another CA's file").await;

    // prefer (also the default) takes the TLS the server offers
    for (case, tls) in [("prefer", "sslmode=prefer"), ("default", "")] {
        let (relay, app_name) = relay_on(&cluster.url("127.0.0.1", tls), case).await;
        assert_ready_over_tls(&relay, &admin, &app_name, case).await;
    }

    // disable: plain TCP, which pg_hba.conf refuses
    let (relay, _) = relay_on(&cluster.url("127.0.0.1", "sslmode=disable"), "disable").await;
    assert_refused(&relay, "no pg_hba.conf entry", "disable against hostssl only").await;

    eprintln!("tls: every sslmode against one cluster in {:?}", started.elapsed());
}
