use super::*;
use serde_json::{json, Value};

struct NoLive;
impl LiveView for NoLive {
    fn usage(&self, _org: OrgNum) -> Usage {
        Usage {
            connections: 3,
            ..Usage::default()
        }
    }
}

const NOW: u64 = 1_700_000_000;

struct Harness {
    api: Api,
    root: String,
}

fn limits() -> OrgLimits {
    OrgLimits {
        retained_bytes_max: 1 << 28,
        offline_queue_bytes_max: 1 << 28,
        users_max: 100_000,
        acl_rules_max: 10_000,
        keys_max: 1000,
        streams_max: 10_000,
        token_exchanges_per_minute_max: 600,
    }
}

fn harness() -> Harness {
    harness_with(limits())
}

fn harness_with(limits: OrgLimits) -> Harness {
    harness_full(limits, &[])
}

fn harness_full(limits: OrgLimits, providers: &[jwt::ProviderConfig]) -> Harness {
    let mut store = Store::for_tests();
    let root = store.bootstrap().unwrap().unwrap();
    let api = Api::new(store, jwt::Providers::new(providers).unwrap(), limits).unwrap();
    Harness { api, root }
}

impl Harness {
    fn call(&mut self, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let req = ApiRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            bearer: (!key.is_empty()).then(|| key.to_string()),
            body: if body.is_null() {
                bytes::Bytes::new()
            } else {
                bytes::Bytes::from(serde_json::to_vec(&body).unwrap())
            },
        };
        match self.api.handle(&req, &NoLive, NOW) {
            Outcome::Done(r) => {
                let v = if r.body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&r.body).unwrap()
                };
                (r.status, v)
            }
            Outcome::Sessions { .. } => (0, Value::Null),
        }
    }

    fn raw(&mut self, key: &str, method: &str, path: &str, body: &[u8]) -> ApiResponse {
        let req = ApiRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            bearer: Some(key.to_string()),
            body: bytes::Bytes::copy_from_slice(body),
        };
        match self.api.handle(&req, &NoLive, NOW) {
            Outcome::Done(r) => r,
            Outcome::Sessions { .. } => panic!("sessions"),
        }
    }

    fn new_org(&mut self) -> (String, String) {
        let root = self.root.clone();
        let (st, v) = self.call(&root, "POST", "/v1/orgs", json!({"name": "acme"}));
        assert_eq!(st, 201, "{v}");
        (
            v["org"]["id"].as_str().unwrap().to_string(),
            v["key"]["key"].as_str().unwrap().to_string(),
        )
    }
}

#[test]
fn openapi_lists_exactly_the_routes() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let mut in_doc = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            in_doc.push(format!("{} {}", method.to_uppercase(), path));
        }
    }
    let mut in_router: Vec<String> = ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.iter().map(move |m| format!("{m} {p}")))
        .collect();
    in_doc.sort();
    in_router.sort();
    assert_eq!(in_doc, in_router);
    let mut h = harness();
    let (st, v) = h.call("", "GET", "/v1/openapi.json", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(v["openapi"], "3.0.3");
}

#[test]
fn auth_errors_and_routing() {
    let mut h = harness();
    let root = h.root.clone();
    assert_eq!(h.call("", "GET", "/v1/users", Value::Null).0, 401);
    assert_eq!(h.call("sk_nope", "GET", "/v1/users", Value::Null).0, 401);
    assert_eq!(h.call(&root, "GET", "/v1/nothing", Value::Null).0, 404);
    let r = h.raw(&root, "PUT", "/v1/users", b"");
    assert_eq!(r.status, 405);
    assert!(r.headers.contains(&("Allow".into(), "GET, POST".into())));
    let big = vec![b' '; BODY_MAX + 1];
    assert_eq!(h.raw(&root, "POST", "/v1/users", &big).status, 413);
    assert_eq!(
        h.call(&root, "GET", "/v1/users?limit=0", Value::Null).0,
        400
    );
}

#[test]
fn user_crud() {
    let mut h = harness();
    let k = h.root.clone();
    let (st, v) = h.call(
        &k,
        "POST",
        "/v1/users",
        json!({"username": "alice", "password": "password1"}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["enabled"], true);
    assert!(v.get("password").is_none());
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/users",
            json!({"username": "alice", "password": "password1"})
        )
        .0,
        409
    );
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/users",
            json!({"username": "a b", "password": "password1"})
        )
        .0,
        400
    );
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/users",
            json!({"username": "bob", "password": "short"})
        )
        .0,
        400
    );
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/users",
            json!({"username": "bob", "password": "password1", "acl_sets": ["nope"]})
        )
        .0,
        400
    );
    let (st, v) = h.call(
        &k,
        "POST",
        "/v1/users",
        json!({"username": "bob", "password": "password1", "extra": 1}),
    );
    assert_eq!(st, 400);
    assert!(v["detail"].as_str().unwrap().contains("unknown field"));
    let snap = h.api.take_changed().unwrap();
    assert!(h.api.take_changed().is_none());
    let alice = snap.user(0, "alice").unwrap().clone();
    assert!(secrets::verify_password(&alice.password_hash, b"password1"));
    let (st, v) = h.call(
        &k,
        "PATCH",
        "/v1/users/alice",
        json!({"enabled": false, "namespace": "ns"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["namespace"], "ns");
    let after = h.api.take_changed().unwrap();
    assert_ne!(after.user(0, "alice").unwrap().generation, alice.generation);
    assert!(after.version > snap.version);
    assert_eq!(
        h.call(&k, "GET", "/v1/users/alice", Value::Null).1["enabled"],
        false
    );
    assert_eq!(
        h.call(&k, "PATCH", "/v1/users/nobody", json!({"enabled": false}))
            .0,
        404
    );
    for name in ["c1", "c2", "c3"] {
        h.call(
            &k,
            "POST",
            "/v1/users",
            json!({"username": name, "password": "password1"}),
        );
    }
    let (st, v) = h.call(&k, "GET", "/v1/users?limit=2", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["items"][0]["username"], "alice");
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let (_, v) = h.call(
        &k,
        "GET",
        &format!("/v1/users?limit=2&cursor={cursor}"),
        Value::Null,
    );
    assert_eq!(v["items"][0]["username"], "c2");
    assert!(v["next_cursor"].is_null());
    assert_eq!(h.call(&k, "DELETE", "/v1/users/alice", Value::Null).0, 204);
    assert_eq!(h.call(&k, "DELETE", "/v1/users/alice", Value::Null).0, 404);
    assert!(h.api.snapshot().user(0, "alice").is_none());
}

#[test]
fn secrets_never_echo_in_errors() {
    let mut h = harness();
    let k = h.root.clone();
    let (st, v) = h.call(
        &k,
        "POST",
        "/v1/users",
        json!({"username": "x", "password": "password1", "enabled": "hunter2hunter2"}),
    );
    assert_eq!(st, 400);
    assert!(!v.to_string().contains("hunter2"), "{v}");
    let (st, v) = h.call(
        &k,
        "POST",
        "/v1/keys",
        json!({"name": "x", "kind": "sk_leakedleaked"}),
    );
    assert_eq!(st, 400);
    assert!(!v.to_string().contains("leaked"), "{v}");
    let (_, v) = h.call(&format!("{k}x"), "GET", "/v1/users", Value::Null);
    assert!(!v.to_string().contains(&k));
}

#[test]
fn sets_rules_and_user_acl() {
    let mut h = harness();
    let k = h.root.clone();
    assert_eq!(
        h.call(&k, "POST", "/v1/acl/sets", json!({"name": "ops"})).0,
        201
    );
    assert_eq!(
        h.call(&k, "POST", "/v1/acl/sets", json!({"name": "ops"})).0,
        409
    );
    let (st, r1) = h.call(
        &k,
        "POST",
        "/v1/acl/rules",
        json!({"topic": "users/{username}/#", "action": "all", "permission": "allow"}),
    );
    assert_eq!(st, 201, "{r1}");
    assert_eq!(r1["set"], "default");
    let (st, _) = h.call(
        &k,
        "POST",
        "/v1/acl/rules",
        json!({"topic": "ops/#", "action": "publish", "permission": "allow", "set": "ops"}),
    );
    assert_eq!(st, 201);
    let (st, _) = h.call(
        &k,
        "POST",
        "/v1/acl/rules",
        json!({"topic": "ops/secret", "action": "all", "permission": "deny", "set": "ops"}),
    );
    assert_eq!(st, 201);
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/acl/rules",
            json!({"topic": "a/#/b", "action": "all", "permission": "allow"})
        )
        .0,
        400
    );
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/acl/rules",
            json!({"topic": "a", "action": "read", "permission": "allow"})
        )
        .0,
        400
    );
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/acl/rules",
            json!({"topic": "a", "action": "all", "permission": "allow", "set": "zz"})
        )
        .0,
        400
    );
    h.call(
        &k,
        "POST",
        "/v1/users",
        json!({"username": "ann", "password": "password1", "acl_sets": ["ops"]}),
    );
    h.call(
        &k,
        "POST",
        "/v1/users",
        json!({"username": "ben", "password": "password1"}),
    );
    let snap = h.api.snapshot();
    let ann = snap.user(0, "ann").unwrap();
    assert!(ann.acl.may_publish("ops/x", "ann", "c"));
    assert!(!ann.acl.may_publish("ops/secret", "ann", "c"));
    assert!(ann.acl.may_subscribe("users/ann/#", "ann", "c"));
    assert!(!ann.acl.may_subscribe("users/ben/#", "ann", "c"));
    assert!(!snap
        .user(0, "ben")
        .unwrap()
        .acl
        .may_publish("ops/x", "ben", "c"));
    let (_, set) = h.call(&k, "GET", "/v1/acl/sets/ops", Value::Null);
    assert_eq!(set["rule_count"], 2);
    assert_eq!(set["rules"].as_array().unwrap().len(), 2);
    let (_, list) = h.call(&k, "GET", "/v1/acl/rules?set=ops", Value::Null);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        h.call(&k, "GET", "/v1/acl/rules?set=zz", Value::Null).0,
        404
    );
    let id = r1["id"].as_str().unwrap();
    let (st, v) = h.call(
        &k,
        "PATCH",
        &format!("/v1/acl/rules/{id}"),
        json!({"permission": "deny"}),
    );
    assert_eq!((st, v["permission"].as_str()), (200, Some("deny")));
    assert!(!h
        .api
        .snapshot()
        .user(0, "ann")
        .unwrap()
        .acl
        .may_subscribe("users/ann/#", "ann", "c"));
    assert_eq!(h.call(&k, "DELETE", "/v1/acl/sets/ops", Value::Null).0, 409);
    assert_eq!(
        h.call(&k, "DELETE", "/v1/acl/sets/default", Value::Null).0,
        409
    );
    h.call(&k, "PATCH", "/v1/users/ann", json!({"acl_sets": []}));
    assert_eq!(h.call(&k, "DELETE", "/v1/acl/sets/ops", Value::Null).0, 204);
    assert_eq!(
        h.call(&k, "DELETE", &format!("/v1/acl/rules/{id}"), Value::Null)
            .0,
        204
    );
    assert_eq!(
        h.call(&k, "GET", &format!("/v1/acl/rules/{id}"), Value::Null)
            .0,
        404
    );
}

#[test]
fn keys_kinds_and_permissions() {
    let mut h = harness();
    let k = h.root.clone();
    let (st, rk) = h.call(&k, "POST", "/v1/keys", json!({"name": "alerts", "kind": "restricted", "permissions": [{"action": "publish", "topic": "alerts/*"}]}));
    assert_eq!(st, 201, "{rk}");
    assert_eq!(rk["permissions"][0]["topic"], "alerts/#");
    let rk_secret = rk["key"].as_str().unwrap().to_string();
    assert!(rk_secret.starts_with("rk_"));
    assert_eq!(rk["prefix"].as_str().unwrap(), &rk_secret[..10]);
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/keys",
            json!({"name": "x", "kind": "restricted"})
        )
        .0,
        400
    );
    assert_eq!(
        h.call(
            &k,
            "POST",
            "/v1/keys",
            json!({"name": "x", "kind": "secret", "acl_sets": ["default"]})
        )
        .0,
        400
    );
    let (st, pk) = h.call(
        &k,
        "POST",
        "/v1/keys",
        json!({"name": "web", "kind": "public"}),
    );
    assert_eq!(st, 201);
    let pk_secret = pk["key"].as_str().unwrap().to_string();
    let snap = h.api.snapshot();
    let rka = snap.key(&rk_secret).unwrap();
    assert_eq!(rka.kind, KeyKind::Restricted);
    assert!(rka.acl.may_publish("alerts/x", "", ""));
    assert!(!rka.acl.may_subscribe("alerts/#", "", ""));
    let pka = snap.key(&pk_secret).unwrap();
    assert!(pka.acl.may_subscribe("#", "", ""));
    assert!(!pka.acl.may_publish("a", "", ""));
    // Neither may manage.
    for key in [&rk_secret, &pk_secret] {
        assert_eq!(h.call(key, "GET", "/v1/users", Value::Null).0, 403);
        assert_eq!(h.call(key, "GET", "/v1/sessions", Value::Null).0, 403);
        assert_eq!(h.call(key, "GET", "/v1/orgs", Value::Null).0, 403);
    }
    assert_eq!(
        h.call(
            &rk_secret,
            "POST",
            "/v1/token-exchange",
            json!({"token": "x"})
        )
        .0,
        403
    );
    assert_eq!(
        h.call(
            &pk_secret,
            "POST",
            "/v1/token-exchange",
            json!({"token": "x"})
        )
        .0,
        401
    );
    let list = h.call(&k, "GET", "/v1/keys", Value::Null).1;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&rk_secret));
    let id = rk["id"].as_str().unwrap();
    assert_eq!(
        h.call(
            &k,
            "PATCH",
            &format!("/v1/keys/{id}"),
            json!({"name": "n2"})
        )
        .1["name"],
        "n2"
    );
    assert_eq!(
        h.call(&k, "DELETE", &format!("/v1/keys/{id}"), Value::Null)
            .0,
        204
    );
    assert!(h.api.snapshot().key(&rk_secret).is_none());
    assert_eq!(h.call(&rk_secret, "GET", "/v1/org", Value::Null).0, 401);
    assert!(h.call(&k, "GET", &format!("/v1/keys/{id}"), Value::Null).1["revoked_at"].is_u64());
    assert_eq!(h.call(&k, "GET", "/v1/keys/key_nope", Value::Null).0, 404);
}

#[test]
fn orgs_are_root_only_and_isolated() {
    let mut h = harness();
    let root = h.root.clone();
    let (a_id, a_key) = h.new_org();
    let (b_id, b_key) = h.new_org();
    assert_ne!(a_id, b_id);
    let snap = h.api.snapshot();
    assert_eq!(snap.org_num(&a_id), Some(1));
    assert_eq!(snap.org_num(&b_id), Some(2));
    assert!(!snap.key(&a_key).unwrap().root);
    // An org's sk key cannot use /v1/orgs.
    assert_eq!(h.call(&a_key, "GET", "/v1/orgs", Value::Null).0, 403);
    assert_eq!(
        h.call(&a_key, "POST", "/v1/orgs", json!({"name": "x"})).0,
        403
    );
    h.call(
        &b_key,
        "POST",
        "/v1/users",
        json!({"username": "bu", "password": "password1"}),
    );
    let (_, bk) = h.call(
        &b_key,
        "POST",
        "/v1/keys",
        json!({"name": "k", "kind": "public"}),
    );
    let (_, br) = h.call(
        &b_key,
        "POST",
        "/v1/acl/rules",
        json!({"topic": "t", "action": "all", "permission": "allow"}),
    );
    let bk_id = bk["id"].as_str().unwrap();
    let br_id = br["id"].as_str().unwrap();
    for (m, p) in [
        ("GET", "/v1/users/bu".to_string()),
        ("PATCH", "/v1/users/bu".to_string()),
        ("DELETE", "/v1/users/bu".to_string()),
        ("GET", format!("/v1/keys/{bk_id}")),
        ("DELETE", format!("/v1/keys/{bk_id}")),
        ("GET", format!("/v1/acl/rules/{br_id}")),
        ("DELETE", format!("/v1/acl/rules/{br_id}")),
    ] {
        let body = if m == "PATCH" {
            json!({"enabled": false})
        } else {
            Value::Null
        };
        assert_eq!(h.call(&a_key, m, &p, body).0, 404, "{m} {p}");
    }
    assert_eq!(
        h.call(&a_key, "GET", "/v1/users", Value::Null).1["items"],
        json!([])
    );
    assert_eq!(
        h.call(&a_key, "GET", "/v1/org", Value::Null).1["id"],
        a_id.as_str()
    );
    // The same username may exist in two orgs.
    assert_eq!(
        h.call(
            &a_key,
            "POST",
            "/v1/users",
            json!({"username": "bu", "password": "password1"})
        )
        .0,
        201
    );
    // An org's own key may rename it but not set its own limits (finding 7 of issue 11).
    let (st, v) = h.call(
        &a_key,
        "PATCH",
        "/v1/org",
        json!({"name": "A", "settings": {"rate_burst": 7}}),
    );
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, org) = h.call(&a_key, "PATCH", "/v1/org", json!({"name": "A"}));
    assert_eq!((st, org["name"].as_str()), (200, Some("A")));
    assert_eq!(org["settings"]["rate_burst"], 200);
    let (st, org) = h.call(
        &root,
        "PATCH",
        &format!("/v1/orgs/{a_id}"),
        json!({"settings": {"rate_burst": 7}}),
    );
    assert_eq!(st, 200, "{org}");
    let org = h.call(&a_key, "GET", "/v1/org", Value::Null).1;
    assert_eq!(org["settings"]["rate_burst"], 7);
    assert_eq!(org["name"], "A");
    assert_eq!(org["settings"]["rate_limit_per_sec"], 100);
    assert_eq!(org["usage"]["connections"], 3);
    assert_eq!(org["usage"]["month"], "2023-11");
    assert_eq!(
        h.call(&root, "GET", "/v1/orgs", Value::Null).1["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        h.call(&root, "DELETE", "/v1/orgs/default", Value::Null).0,
        409
    );
    assert_eq!(
        h.call(&root, "DELETE", &format!("/v1/orgs/{b_id}"), Value::Null)
            .0,
        204
    );
    assert_eq!(
        h.call(&root, "GET", &format!("/v1/orgs/{b_id}"), Value::Null)
            .0,
        404
    );
    assert_eq!(h.call(&b_key, "GET", "/v1/org", Value::Null).0, 401);
    // Only the root key may revoke the root key.
    let root_id = h.api.snapshot().key(&root).unwrap().id.clone();
    let (_, other) = h.call(
        &root,
        "POST",
        "/v1/keys",
        json!({"name": "ops", "kind": "secret"}),
    );
    let other = other["key"].as_str().unwrap().to_string();
    assert_eq!(
        h.call(
            &other,
            "DELETE",
            &format!("/v1/keys/{root_id}"),
            Value::Null
        )
        .0,
        403
    );
}

#[test]
fn sessions_are_parsed_and_handed_to_the_broker() {
    let mut h = harness();
    let req = |path: &str, method: &str, query: &str| ApiRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        bearer: Some(h.root.clone()),
        body: bytes::Bytes::new(),
    };
    let r1 = req("/v1/sessions", "GET", "state=active&limit=5");
    let r5 = req("/v1/sessions", "GET", "search=dev%2F7");
    let r6 = req("/v1/sessions", "GET", "search=a%00b");
    let r2 = req("/v1/sessions/c%2F1/disconnect", "POST", "");
    let r3 = req("/v1/sessions/c1", "DELETE", "");
    let r4 = req("/v1/sessions", "GET", "state=bogus");
    assert_eq!(
        h.api.handle(&r1, &NoLive, NOW),
        Outcome::Sessions {
            org: 0,
            op: SessionsOp::List {
                state: SessionState::Active,
                limit: 5,
                cursor: None,
                search: None,
            }
        }
    );
    // The default state is active; a search is passed on, decoded; control bytes are refused.
    assert_eq!(
        h.api.handle(&r5, &NoLive, NOW),
        Outcome::Sessions {
            org: 0,
            op: SessionsOp::List {
                state: SessionState::Active,
                limit: 100,
                cursor: None,
                search: Some("dev/7".into()),
            }
        }
    );
    assert!(matches!(
        h.api.handle(&r6, &NoLive, NOW),
        Outcome::Done(ref r) if r.status == 400
    ));
    assert_eq!(
        h.api.handle(&r2, &NoLive, NOW),
        Outcome::Sessions {
            org: 0,
            op: SessionsOp::Disconnect {
                client_id: "c/1".into()
            }
        }
    );
    assert!(matches!(
        h.api.handle(&r3, &NoLive, NOW),
        Outcome::Sessions {
            op: SessionsOp::Delete { .. },
            ..
        }
    ));
    assert!(matches!(h.api.handle(&r4, &NoLive, NOW), Outcome::Done(r) if r.status == 400));
}

#[test]
fn token_exchange_credentials() {
    let mut h = harness();
    let verified = jwt::Verified {
        provider: "idp".into(),
        token_id: "jti:1".into(),
        subject: "dev1".into(),
        expires_at: NOW + 100_000,
        publish: vec!["devices/dev1/#".into()],
        subscribe: vec!["cmd/dev1".into()],
    };
    let r = h
        .api
        .issue_credentials("default", verified.clone(), NOW)
        .unwrap();
    assert_eq!(r.status, 201);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["expires_at"], NOW + EXCHANGE_TTL_MAX);
    let full = v["username"].as_str().unwrap();
    let user = full.strip_suffix("@default").unwrap();
    assert!(user.starts_with("tx_"));
    h.api.rebuild().unwrap();
    let snap = h.api.snapshot();
    let u = snap.user(0, user).unwrap();
    assert!(secrets::verify_password(
        &u.password_hash,
        v["password"].as_str().unwrap().as_bytes()
    ));
    assert_eq!(u.expires_at, Some(NOW + EXCHANGE_TTL_MAX));
    assert!(u.acl.may_publish("devices/dev1/t", user, "c"));
    assert!(!u.acl.may_publish("cmd/dev1", user, "c"));
    assert!(u.acl.may_subscribe("cmd/dev1", user, "c"));
    let mut bad = verified;
    bad.publish = vec!["a/#/b".into()];
    assert_eq!(
        h.api
            .issue_credentials("default", bad, NOW)
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(h.api.sweep(NOW + EXCHANGE_TTL_MAX + 1).unwrap(), 1);
    assert!(h.api.snapshot().user(0, user).is_none());
}

#[test]
fn last_used_is_written_at_most_once_a_minute() {
    let mut h = harness();
    let k = h.root.clone();
    let id = h.api.snapshot().key(&k).unwrap().id.clone();
    let get = |h: &mut Harness, now: u64| {
        let req = ApiRequest {
            method: "GET".into(),
            path: format!("/v1/keys/{id}"),
            bearer: Some(k.clone()),
            ..ApiRequest::default()
        };
        match h.api.handle(&req, &NoLive, now) {
            Outcome::Done(r) => {
                serde_json::from_slice::<Value>(&r.body).unwrap()["last_used_at"].clone()
            }
            Outcome::Sessions { .. } => unreachable!(),
        }
    };
    assert_eq!(get(&mut h, NOW), NOW);
    assert_eq!(get(&mut h, NOW + 30), NOW);
    assert_eq!(get(&mut h, NOW + 61), NOW + 61);
}

#[test]
fn per_org_caps_refuse_with_403_and_spare_other_orgs() {
    let mut h = harness_with(OrgLimits {
        users_max: 2,
        acl_rules_max: 1,
        keys_max: 2,
        ..limits()
    });
    let root = h.root.clone();
    let (_, b_key) = h.new_org();
    for key in [&root, &b_key] {
        for name in ["u1", "u2"] {
            let body = json!({"username": name, "password": "password1"});
            assert_eq!(h.call(key, "POST", "/v1/users", body).0, 201);
        }
        let body = json!({"topic": "a/#", "permission": "allow", "action": "all"});
        assert_eq!(h.call(key, "POST", "/v1/acl/rules", body).0, 201);
    }
    let (st, v) = h.call(
        &root,
        "POST",
        "/v1/users",
        json!({"username": "u3", "password": "password1"}),
    );
    assert_eq!((st, v["error"].as_str()), (403, Some("limit_exceeded")));
    assert!(v["detail"].as_str().unwrap().contains("users_max"), "{v}");
    let body = json!({"topic": "b/#", "permission": "allow", "action": "all"});
    let (st, v) = h.call(&b_key, "POST", "/v1/acl/rules", body);
    assert_eq!(st, 403);
    assert!(
        v["detail"].as_str().unwrap().contains("acl_rules_max"),
        "{v}"
    );
    // Keys: root + one more in default; B's first key + one more.
    for key in [&root, &b_key] {
        let body = json!({"name": "k", "kind": "public"});
        assert_eq!(h.call(key, "POST", "/v1/keys", body.clone()).0, 201);
        let (st, v) = h.call(key, "POST", "/v1/keys", body);
        assert_eq!(st, 403);
        assert!(v["detail"].as_str().unwrap().contains("keys_max"), "{v}");
    }
    // A revoked key frees its place; a deleted user frees its place.
    let (_, keys) = h.call(&b_key, "GET", "/v1/keys", Value::Null);
    let public = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "public")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke = format!("/v1/keys/{public}");
    assert_eq!(h.call(&b_key, "DELETE", &revoke, Value::Null).0, 204);
    let body = json!({"name": "k2", "kind": "public"});
    assert_eq!(h.call(&b_key, "POST", "/v1/keys", body).0, 201);
    assert_eq!(h.call(&root, "DELETE", "/v1/users/u1", Value::Null).0, 204);
    let body = json!({"username": "u3", "password": "password1"});
    assert_eq!(h.call(&root, "POST", "/v1/users", body).0, 201);
}

#[test]
fn ids_with_control_bytes_are_refused_before_any_lookup() {
    let mut h = harness();
    let root = h.root.clone();
    for path in [
        "/v1/users/a%00b",
        "/v1/users/a%0ab",
        "/v1/keys/key_%00",
        "/v1/acl/sets/a%7f",
        "/v1/acl/rules/r%0d",
        "/v1/orgs/org_%00x",
        "/v1/acl/rules?set=a%00",
    ] {
        let (st, v) = h.call(&root, "GET", path, Value::Null);
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some("bad_request")),
            "{path}"
        );
    }
    for (method, path) in [
        ("GET", "/v1/sessions/%24%001%2Fc"),
        ("DELETE", "/v1/sessions/%24%001%2Fc"),
        ("POST", "/v1/sessions/%24%001%2Fc/disconnect"),
    ] {
        let req = ApiRequest {
            method: method.into(),
            path: path.into(),
            bearer: Some(root.clone()),
            ..ApiRequest::default()
        };
        match h.api.handle(&req, &NoLive, NOW) {
            Outcome::Done(r) => assert_eq!(r.status, 400, "{method} {path}"),
            Outcome::Sessions { .. } => panic!("{method} {path} reached the shards"),
        }
    }
}

const TX_SECRET: &str = "an-hs256-test-secret-of-32-bytes!";

fn tx_provider(name: &str, org_id: &str) -> jwt::ProviderConfig {
    jwt::ProviderConfig {
        name: name.into(),
        org_id: org_id.into(),
        require_jti: true,
        topics: Vec::new(),
        issuer: format!("https://{name}.test/"),
        audience: None,
        algorithm: "HS256".into(),
        secret: Some(TX_SECRET.into()),
        public_key_pem: None,
        jwks_url: None,
    }
}

fn tx_token(provider: &str, jti: &str) -> String {
    let claims = json!({
        "iss": format!("https://{provider}.test/"),
        "sub": "dev1",
        "jti": jti,
        "exp": NOW + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TX_SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn token_exchange_is_bound_to_the_org_once_per_token_and_rate_limited() {
    let mut h = harness_full(
        OrgLimits {
            token_exchanges_per_minute_max: 4,
            ..limits()
        },
        &[tx_provider("a", "default")],
    );
    let root = h.root.clone();
    let (_, b_key) = h.new_org();
    // B's key presents a token of the default org's provider.
    let (st, v) = h.call(
        &b_key,
        "POST",
        "/v1/token-exchange",
        json!({"token": tx_token("a", "1")}),
    );
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = h.call(
        &root,
        "POST",
        "/v1/token-exchange",
        json!({"token": tx_token("a", "1")}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = h.call(
        &root,
        "POST",
        "/v1/token-exchange",
        json!({"token": tx_token("a", "1")}),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("token_replayed")),
        "{v}"
    );
    assert_eq!(
        h.call(
            &root,
            "POST",
            "/v1/token-exchange",
            json!({"token": tx_token("a", "2")})
        )
        .0,
        201
    );
    // The refused replay counted too: this is the default org's fourth this minute, B's
    // refused one counted for B.
    assert_eq!(
        h.call(
            &root,
            "POST",
            "/v1/token-exchange",
            json!({"token": tx_token("a", "3")})
        )
        .0,
        201
    );
    let req = ApiRequest {
        method: "POST".into(),
        path: "/v1/token-exchange".into(),
        bearer: Some(root.clone()),
        body: bytes::Bytes::from(
            serde_json::to_vec(&json!({"token": tx_token("a", "4")})).unwrap(),
        ),
        ..ApiRequest::default()
    };
    let Outcome::Done(r) = h.api.handle(&req, &NoLive, NOW + 1) else {
        panic!("sessions")
    };
    assert_eq!(r.status, 429);
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "Retry-After" && v == "59"));
    let Outcome::Done(r) = h.api.handle(&req, &NoLive, NOW + 60) else {
        panic!("sessions")
    };
    assert_eq!(r.status, 201);
    // The replay set forgets a token only once it expired.
    h.api.sweep(NOW + 100).unwrap();
    let (st, _) = h.call(
        &root,
        "POST",
        "/v1/token-exchange",
        json!({"token": tx_token("a", "1")}),
    );
    assert_eq!(st, 409);
}
