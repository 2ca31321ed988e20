use super::*;
use crate::control::snapshot::KeyKind;

fn user(name: &str, sets: &[&str]) -> NewUser {
    NewUser {
        username: name.to_string(),
        password_hash: "$argon2id$fake".to_string(),
        namespace: None,
        enabled: true,
        acl_sets: sets.iter().map(|s| s.to_string()).collect(),
        expires_at: None,
        allowed: None,
        owner: None,
    }
}

#[test]
fn migrations_and_bootstrap() {
    let mut s = Store::for_tests();
    let migrations = if s.shared() {
        schema::PG_MIGRATIONS
    } else {
        schema::MIGRATIONS
    };
    assert_eq!(s.schema_version().unwrap(), migrations.len());
    s.migrate().unwrap();
    let root = s.bootstrap().unwrap().unwrap();
    assert!(root.starts_with("sk_"));
    assert!(s.bootstrap().unwrap().is_none());
    let snap = s.snapshot(1).unwrap();
    assert_eq!(snap.org_num("default"), Some(0));
    let key = snap.key(&root).unwrap();
    assert!(key.root);
    assert_eq!(key.kind, KeyKind::Secret);
    assert!(s.get_set("default", "default", false).is_ok());
}

#[test]
fn org_numbers_are_never_reused() {
    let mut s = Store::for_tests();
    s.bootstrap().unwrap();
    let (a, _) = s.create_org("a", &OrgSettings::default(), 1).unwrap();
    assert_eq!(s.org_num(&a.id).unwrap(), 1);
    s.delete_org(&a.id).unwrap();
    let (b, _) = s.create_org("b", &OrgSettings::default(), 1).unwrap();
    assert_eq!(s.org_num(&b.id).unwrap(), 2);
    assert!(matches!(
        s.delete_org("default"),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn delete_org_cascades() {
    let mut s = Store::for_tests();
    s.bootstrap().unwrap();
    let (o, k) = s.create_org("a", &OrgSettings::default(), 1).unwrap();
    s.create_set(&o.id, "x", "", 1).unwrap();
    s.create_rule(&o.id, "x", Permission::Allow, Action::All, "a/#", 1)
        .unwrap();
    s.create_user(&o.id, &user("u", &["x"]), 1).unwrap();
    s.create_key(&o.id, "p", KeyKindName::Public, &[], &["x".into()], 1)
        .unwrap();
    s.delete_org(&o.id).unwrap();
    let snap = s.snapshot(2).unwrap();
    assert!(snap.org_num(&o.id).is_none());
    assert!(snap.key(k.key.as_deref().unwrap()).is_none());
}

#[test]
fn user_generation_changes_with_its_rules() {
    let mut s = Store::for_tests();
    s.bootstrap().unwrap();
    s.create_set("default", "x", "", 1).unwrap();
    s.create_user("default", &user("u", &["x"]), 1).unwrap();
    s.create_user("default", &user("v", &[]), 1).unwrap();
    let g0 = s.snapshot(1).unwrap();
    let (u0, v0) = (
        g0.user(0, "u").unwrap().generation,
        g0.user(0, "v").unwrap().generation,
    );
    let r = s
        .create_rule(
            "default",
            "x",
            Permission::Allow,
            Action::All,
            "a/{username}/#",
            1,
        )
        .unwrap();
    let g1 = s.snapshot(2).unwrap();
    let u1 = g1.user(0, "u").unwrap();
    assert_ne!(u1.generation, u0);
    assert_eq!(g1.user(0, "v").unwrap().generation, v0);
    assert!(u1.acl.may_publish("a/u/x", "u", "c"));
    assert!(!g1.user(0, "v").unwrap().acl.may_publish("a/v/x", "v", "c"));
    s.delete_rule("default", &r.id).unwrap();
    assert_eq!(s.snapshot(3).unwrap().user(0, "u").unwrap().generation, u0);
    s.update_user(
        "default",
        "v",
        &UserChange {
            enabled: Some(false),
            ..Default::default()
        },
        2,
    )
    .unwrap();
    let g4 = s.snapshot(4).unwrap();
    assert_ne!(g4.user(0, "v").unwrap().generation, v0);
    s.delete_user("default", "v").unwrap();
    assert!(s.snapshot(5).unwrap().user(0, "v").is_none());
}

#[test]
fn reopen_keeps_schema_and_data() {
    let dir = std::env::temp_dir().join(format!(
        "ringmq-store-test-{}-{}",
        std::process::id(),
        secrets::random_id("", 8).unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("ringmq.db");
    let root = Store::open(&db).unwrap().bootstrap().unwrap().unwrap();
    let mut again = Store::open(&db).unwrap();
    assert_eq!(again.schema_version().unwrap(), schema::MIGRATIONS.len());
    assert!(again.bootstrap().unwrap().is_none());
    assert!(again.snapshot(1).unwrap().key(&root).unwrap().root);
    let key_file = dir.join("bootstrap-key");
    write_bootstrap_key(&key_file, &root).unwrap();
    assert!(write_bootstrap_key(&key_file, &root).is_err());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn public_key_with_sets_only_subscribes() {
    let mut s = Store::for_tests();
    s.bootstrap().unwrap();
    s.create_set("default", "web", "", 1).unwrap();
    s.create_rule(
        "default",
        "web",
        Permission::Allow,
        Action::All,
        "news/#",
        1,
    )
    .unwrap();
    s.create_rule(
        "default",
        "web",
        Permission::Deny,
        Action::Subscribe,
        "news/private/#",
        1,
    )
    .unwrap();
    let k = s
        .create_key(
            "default",
            "web",
            KeyKindName::Public,
            &[],
            &["web".into()],
            1,
        )
        .unwrap();
    let snap = s.snapshot(1).unwrap();
    let key = snap.key(k.key.as_deref().unwrap()).unwrap();
    assert_eq!(key.kind, KeyKind::Public);
    assert!(key.acl.may_subscribe("news/a", "", ""));
    assert!(!key.acl.may_subscribe("news/#", "", ""));
    assert!(!key.acl.may_subscribe("other", "", ""));
    assert!(!key.acl.may_publish("news/a", "", ""));
    let g = key.generation;
    s.create_rule(
        "default",
        "web",
        Permission::Allow,
        Action::Subscribe,
        "more/#",
        2,
    )
    .unwrap();
    assert_ne!(
        s.snapshot(2)
            .unwrap()
            .key(k.key.as_deref().unwrap())
            .unwrap()
            .generation,
        g
    );
    assert!(matches!(
        s.delete_set("default", "web"),
        Err(StoreError::Conflict(_))
    ));
    s.revoke_key("default", &k.id, 3).unwrap();
    assert!(s
        .snapshot(3)
        .unwrap()
        .key(k.key.as_deref().unwrap())
        .is_none());
    s.delete_set("default", "web").unwrap();
}

#[test]
fn month_strings() {
    assert_eq!(month_of(0), "1970-01");
    assert_eq!(month_of(1_709_251_200), "2024-03");
    assert_eq!(month_of(1_709_251_199), "2024-02");
    // The quota's reset: the first second of the next month, across a leap February and a year.
    assert_eq!(next_month_start(1_709_251_199), 1_709_251_200);
    assert_eq!(next_month_start(1_709_251_200), 1_711_929_600);
    assert_eq!(next_month_start(0), 2_678_400);
    assert_eq!(next_month_start(1_798_761_599), 1_798_761_600); // 2026-12-31T23:59:59 -> 2027-01-01
}

#[test]
fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "ringmq-store-mode-{}-{}",
        std::process::id(),
        secrets::random_id("", 8).unwrap()
    ));
    std::fs::create_dir(&dir).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let path = dir.join("ringmq.db");
    let mut s = Store::open(&path).unwrap();
    s.bootstrap().unwrap();
    assert_eq!(mode(&path), 0o600);
    let wal = dir.join("ringmq.db-wal");
    assert!(wal.exists());
    assert_eq!(mode(&wal), 0o600);
    drop(s);
    // A database an older version left world-readable is narrowed on open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Store::open(&path).unwrap());
    assert_eq!(mode(&path), 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exchanged_tokens_are_kept_until_they_expire() {
    let mut s = Store::for_tests();
    assert!(s.record_exchange("idp", "jti:1", 100).unwrap());
    assert!(!s.record_exchange("idp", "jti:1", 100).unwrap());
    // Ids are per provider.
    assert!(s.record_exchange("other", "jti:1", 100).unwrap());
    assert_eq!(s.exchanged_count("idp").unwrap(), 1);
    assert_eq!(s.sweep_exchanged(100).unwrap(), 0);
    assert!(!s.record_exchange("idp", "jti:1", 100).unwrap());
    assert_eq!(s.sweep_exchanged(101).unwrap(), 2);
    assert_eq!(s.exchanged_count("idp").unwrap(), 0);
}

/// Two stores on one fresh PostgreSQL database, as two nodes of a cluster see it; `None` when
/// `RINGMQ_TEST_STORE` names no server.
fn two_nodes() -> Option<(Store, Store)> {
    let config = Store::test_database()?;
    let a = Store::open_postgres_with(config.clone()).unwrap();
    let b = Store::open_postgres_with(config).unwrap();
    Some((a, b))
}

#[test]
fn nodes_sharing_a_store_bootstrap_once_and_see_each_others_writes() {
    let Some((mut a, mut b)) = two_nodes() else {
        eprintln!("RINGMQ_TEST_STORE is not set: PostgreSQL-only test skipped");
        return;
    };
    let first = a.bootstrap().unwrap();
    assert!(first.is_some());
    assert!(
        b.bootstrap().unwrap().is_none(),
        "the other node finds it done"
    );
    let changes = b.changes().unwrap();
    let (org, _) = a.create_org("acme", &OrgSettings::default(), 1).unwrap();
    a.create_user(&org.id, &user("dev", &[]), 1).unwrap();
    let after = b.changes().unwrap();
    assert!(after > changes, "the other node sees the count move");
    // A key's use and a sweep that finds nothing are no change to load.
    let keys = a.list_keys(&org.id, 10, None).unwrap().0;
    a.touch_key(&keys[0].id, 5).unwrap();
    a.sweep_expired(5).unwrap();
    assert_eq!(b.changes().unwrap(), after);
    a.revoke_key(&org.id, &keys[0].id, 6).unwrap();
    assert!(b.changes().unwrap() > after, "a revoked key is");
    let snap = b.snapshot(2).unwrap();
    assert_eq!(snap.org_num(&org.id), Some(1));
    assert!(snap.user(1, "dev").is_some());
    // Org numbers come from one counter: a node creating an org after another gets the next.
    let (second, _) = b.create_org("other", &OrgSettings::default(), 1).unwrap();
    assert_eq!(a.org_num(&second.id).unwrap(), 2);
    // Usage adds up over the nodes.
    let add = UsageCounters {
        messages_in: 3,
        messages_out: 4,
        rest_publishes: 1,
    };
    a.add_usage(&org.id, "2026-12", add).unwrap();
    b.add_usage(&org.id, "2026-12", add).unwrap();
    assert_eq!(a.usage(&org.id, "2026-12").unwrap().messages_in, 6);
}

#[test]
fn nodes_starting_together_migrate_and_bootstrap_once() {
    let Some(config) = Store::test_database() else {
        eprintln!("RINGMQ_TEST_STORE is not set: PostgreSQL-only test skipped");
        return;
    };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut s = Store::open_postgres_with(config).unwrap();
                s.bootstrap().unwrap()
            })
        })
        .collect();
    let keys: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(keys.len(), 1, "one root key");
}

#[test]
fn a_store_without_its_server_fails_cleanly_and_reconnects() {
    let Some(config) = Store::test_database() else {
        eprintln!("RINGMQ_TEST_STORE is not set: PostgreSQL-only test skipped");
        return;
    };
    let mut s = Store::open_postgres_with(config.clone()).unwrap();
    s.bootstrap().unwrap();
    // Kill this store's session from another connection, as a server restart would.
    let mut admin = config.connect(postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    // The first query may see the dead connection; the next reconnects.
    let first = s.get_org("default");
    if let Err(e) = &first {
        assert!(e.is_unavailable(), "{e}");
    }
    assert_eq!(s.get_org("default").unwrap().id, "default");
}

#[test]
fn store_urls_are_shown_without_credentials() {
    assert_eq!(
        redact_url("postgres://u:secret@h:5432/db?sslmode=disable&password=x2&a=b"),
        "postgres://***@h:5432/db?sslmode=disable&password=***&a=b"
    );
    assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    assert!(check_postgres_url("postgres://u:p@127.0.0.1:5432/db").is_ok());
    assert!(check_postgres_url("http://h/db").is_err());
}

#[test]
fn a_shared_stores_statements_end_server_side() {
    let Some(config) = Store::test_database() else {
        eprintln!("RINGMQ_TEST_STORE is not set: PostgreSQL-only test skipped");
        return;
    };
    // The same server and database, reached through a URL as `--store` gives it.
    let url = std::env::var("RINGMQ_TEST_STORE").unwrap();
    let (server, _) = url
        .split_once('?')
        .unwrap_or((&url, ""))
        .0
        .rsplit_once('/')
        .unwrap();
    let dbname = config.get_dbname().unwrap();
    let s = Store::open_postgres(&format!("{server}/{dbname}")).unwrap();
    let shown: String =
        s.db.query_one("SHOW statement_timeout", &[])
            .unwrap()
            .get(0)
            .unwrap();
    assert_eq!(shown, "10s");
}

#[test]
fn bad_store_urls_are_refused_with_the_reason() {
    for url in [
        "mysql://x",
        "postgres://host:notaport/db",
        "postgres://h/db?connect_timeout=soon",
        "host=h dbname=d",
        "postgres://",
        "postgres:///db",
    ] {
        let e = Store::open_postgres(url).unwrap_err();
        assert!(matches!(e, StoreError::Url(_)), "{url}: {e}");
    }
}
