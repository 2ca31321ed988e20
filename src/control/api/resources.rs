//! Handlers of the resources that need more than one store call: users, sets, rules, keys, orgs
//! and token exchange.

use super::*;

impl Api {
    pub(super) fn create_user(&mut self, org: &str, body: &[u8], now: u64) -> Reply {
        let req: CreateUser = parse_body(body)?;
        check_name("username", &req.username).map_err(bad)?;
        check_password(&req.password).map_err(bad)?;
        if let Some(ns) = &req.namespace {
            check_namespace(ns).map_err(bad)?;
        }
        check_sets(&req.acl_sets)?;
        self.check_cap(org, Counted::Users)?;
        let password_hash = secrets::hash_password(&req.password)
            .map_err(|e| store_error(StoreError::Secret(e)))?;
        let user = NewUser {
            username: req.username,
            password_hash,
            namespace: req.namespace,
            enabled: req.enabled.unwrap_or(true),
            acl_sets: req.acl_sets,
            expires_at: None,
            allowed: None,
            owner: None,
        };
        self.store
            .create_user(org, &user, now)
            .map(|u| json_response(201, &u))
            .map_err(store_error)
    }

    pub(super) fn patch_user(&mut self, org: &str, username: &str, body: &[u8], now: u64) -> Reply {
        let req: PatchUser = parse_body(body)?;
        if let Some(Some(ns)) = &req.namespace {
            check_namespace(ns).map_err(bad)?;
        }
        if let Some(sets) = &req.acl_sets {
            check_sets(sets)?;
        }
        // Look the user up before paying for a hash.
        self.store.get_user(org, username).map_err(store_error)?;
        let password_hash = match &req.password {
            Some(p) => {
                check_password(p).map_err(bad)?;
                Some(secrets::hash_password(p).map_err(|e| store_error(StoreError::Secret(e)))?)
            }
            None => None,
        };
        let change = UserChange {
            password_hash,
            namespace: req.namespace,
            enabled: req.enabled,
            acl_sets: req.acl_sets,
        };
        self.store
            .update_user(org, username, &change, now)
            .map(|u| json_response(200, &u))
            .map_err(store_error)
    }

    pub(super) fn create_set(&mut self, org: &str, body: &[u8], now: u64) -> Reply {
        let req: CreateSet = parse_body(body)?;
        check_name("acl set name", &req.name).map_err(bad)?;
        check_description(&req.description).map_err(bad)?;
        self.store
            .create_set(org, &req.name, &req.description, now)
            .map(|s| json_response(201, &s))
            .map_err(store_error)
    }

    pub(super) fn create_rule(&mut self, org: &str, body: &[u8], now: u64) -> Reply {
        let req: CreateRule = parse_body(body)?;
        check_pattern(&req.topic).map_err(bad)?;
        let set = req.set.as_deref().unwrap_or(DEFAULT_SET);
        check_name("acl set name", set).map_err(bad)?;
        self.check_cap(org, Counted::Rules)?;
        self.store
            .create_rule(org, set, req.permission, req.action, &req.topic, now)
            .map(|r| json_response(201, &r))
            .map_err(store_error)
    }

    pub(super) fn create_key(&mut self, org: &str, body: &[u8], now: u64) -> Reply {
        let req: CreateKey = parse_body(body)?;
        check_label("key name", &req.name).map_err(bad)?;
        let mut permissions = req.permissions.unwrap_or_default();
        let sets = req.acl_sets.unwrap_or_default();
        check_list_len("permissions", permissions.len()).map_err(bad)?;
        check_sets(&sets)?;
        match req.kind {
            KeyKindName::Restricted if permissions.is_empty() => {
                return Err(bad("a restricted key needs at least one permission"));
            }
            KeyKindName::Restricted => {}
            _ if !permissions.is_empty() => {
                return Err(bad("only restricted keys take permissions"));
            }
            _ => {}
        }
        if req.kind != KeyKindName::Public && !sets.is_empty() {
            return Err(bad("only public keys take acl_sets"));
        }
        for p in &mut permissions {
            *p = KeyPermission {
                action: p.action,
                topic: normalize_key_topic(&p.topic),
            };
        }
        check_patterns(permissions.iter().map(|p| &p.topic))?;
        self.check_cap(org, Counted::ActiveKeys)?;
        self.store
            .create_key(org, &req.name, req.kind, &permissions, &sets, now)
            .map(|k| json_response(201, &k))
            .map_err(store_error)
    }

    pub(super) fn revoke_key(&mut self, caller: &Caller, org: &str, id: &str, now: u64) -> Reply {
        // Only the root key itself may retire the root key, so an org key cannot lock the operator out.
        if self.store.is_root_key(org, id).map_err(store_error)? && !caller.key.root {
            return Err(forbidden("only the root key may revoke itself"));
        }
        self.store
            .revoke_key(org, id, now)
            .map(|_| no_content())
            .map_err(store_error)
    }

    pub(super) fn org_object(
        &self,
        id: &str,
        live: &dyn LiveView,
        now: u64,
    ) -> Result<Org, ApiResponse> {
        let mut org = self.store.get_org(id).map_err(store_error)?;
        let month = store::month_of(now);
        let stored = self.store.usage(id, &month).map_err(store_error)?;
        let live = self
            .snapshot
            .org_num(id)
            .map(|n| live.usage(n))
            .unwrap_or_default();
        org.usage = Some(OrgUsage {
            connections: live.connections,
            messages_in: stored.messages_in.saturating_add(live.messages_in),
            messages_out: stored.messages_out.saturating_add(live.messages_out),
            rest_publishes: stored.rest_publishes.saturating_add(live.rest_publishes),
            month,
        });
        Ok(org)
    }

    pub(super) fn org_view(&self, id: &str, live: &dyn LiveView, now: u64) -> Reply {
        self.org_object(id, live, now)
            .map(|o| json_response(200, &o))
    }

    pub(super) fn patch_org(
        &mut self,
        org: &str,
        body: &[u8],
        may_set_limits: bool,
        live: &dyn LiveView,
        now: u64,
    ) -> Reply {
        let req: PatchOrg = parse_body(body)?;
        if !may_set_limits && req.settings.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(forbidden(
                "only the root key may change an org's settings (rate, burst, quota, connections); \
                 this key may read them and change the org's name",
            ));
        }
        if let Some(name) = &req.name {
            check_label("org name", name).map_err(bad)?;
        }
        let mut settings = self.store.get_org(org).map_err(store_error)?.settings;
        if let Some(p) = &req.settings {
            p.apply(&mut settings);
        }
        check_settings(&settings)?;
        self.store
            .update_org(org, req.name.as_deref(), req.settings.as_ref())
            .map_err(store_error)?;
        self.org_view(org, live, now)
    }

    pub(super) fn create_org(&mut self, body: &[u8], now: u64) -> Reply {
        let req: CreateOrg = parse_body(body)?;
        check_label("org name", &req.name).map_err(bad)?;
        let mut settings = OrgSettings::default();
        if let Some(p) = &req.settings {
            p.apply(&mut settings);
        }
        check_settings(&settings)?;
        let (org, key) = self
            .store
            .create_org(&req.name, &settings, now)
            .map_err(store_error)?;
        Ok(json_response(201, &CreatedOrg { org, key }))
    }

    pub(super) fn token_exchange(&mut self, org: &str, body: &[u8], now: u64) -> Reply {
        // Counted before the body is parsed: each attempt may cost a signature check.
        self.exchange_rate(org, now)?;
        let req: TokenExchange = parse_body(body)?;
        if let Some(p) = &req.provider {
            check_label("provider name", p).map_err(bad)?;
        }
        let verified = self
            .providers
            .verify(&req.token, req.provider.as_deref(), org, now)
            .map_err(|e| match &e {
                jwt::JwtError::WrongOrg { provider } => {
                    // Another org's id is not the caller's business; a missing one is the
                    // operator's mistake and worth saying.
                    let orphan = self
                        .providers
                        .orgs()
                        .find(|(name, _)| name == provider)
                        .is_some_and(|(_, org)| self.snapshot.org_num(org).is_none());
                    let detail = if orphan {
                        format!(
                            "token rejected: auth provider {provider:?} serves an org that does \
                             not exist (check its org_id)"
                        )
                    } else {
                        format!("token rejected: {e}")
                    };
                    Api::error(403, "forbidden", &detail)
                }
                // The identity provider's key set could not be had: not the token's fault, and
                // worth retrying (the fetch is tried again at most every 30 s).
                jwt::JwtError::KeySetUnavailable { .. } => {
                    let mut refusal =
                        Api::error(503, "unavailable", &format!("token not checked: {e}"));
                    refusal.headers.push(("Retry-After".into(), "30".into()));
                    refusal
                }
                _ => Api::error(401, "unauthorized", &format!("token rejected: {e}")),
            })?;
        self.check_cap(org, Counted::Users)?;
        self.spend_token(&verified)?;
        self.issue_credentials(org, verified, now)
    }

    /// Counts one exchange of `org` in the current minute; 429 with `Retry-After` past
    /// `[org_limits] token_exchanges_per_minute_max`.
    fn exchange_rate(&mut self, org: &str, now: u64) -> Result<(), ApiResponse> {
        let max = self.limits.token_exchanges_per_minute_max;
        let window = self
            .exchange_windows
            .entry(org.to_string())
            .or_insert((now, 0));
        if now.saturating_sub(window.0) >= 60 {
            *window = (now, 0);
        }
        if window.1 >= max {
            let retry = (window.0 + 60).saturating_sub(now).max(1);
            let mut resp = Api::error(
                429,
                "rate_limited",
                &format!(
                    "at most {max} token exchanges per minute per org \
                     ([org_limits] token_exchanges_per_minute_max); retry in {retry} s"
                ),
            );
            resp.headers.push(("Retry-After".into(), retry.to_string()));
            return Err(resp);
        }
        window.1 += 1;
        Ok(())
    }

    /// Records a verified token as exchanged; 409 `token_replayed` if it was already, 503 when
    /// the provider has [`EXCHANGED_PER_PROVIDER_MAX`] unexpired tokens recorded.
    fn spend_token(&mut self, verified: &jwt::Verified) -> Result<(), ApiResponse> {
        let held = match self.exchanged.get(&verified.provider) {
            Some(&n) => n,
            None => self
                .store
                .exchanged_count(&verified.provider)
                .map_err(store_error)?,
        };
        if held >= EXCHANGED_PER_PROVIDER_MAX {
            return Err(Api::error(
                503,
                "unavailable",
                "too many unexpired tokens of this auth provider were exchanged; try later",
            ));
        }
        let fresh = self
            .store
            .record_exchange(&verified.provider, &verified.token_id, verified.expires_at)
            .map_err(store_error)?;
        if !fresh {
            return Err(Api::error(
                409,
                "token_replayed",
                "this token was exchanged already; a token is exchanged once",
            ));
        }
        self.exchanged.insert(verified.provider.clone(), held + 1);
        Ok(())
    }

    /// Creates the temporary user a verified token buys.
    pub(super) fn issue_credentials(
        &mut self,
        org: &str,
        verified: jwt::Verified,
        now: u64,
    ) -> Reply {
        check_list_len("publish patterns", verified.publish.len()).map_err(bad)?;
        check_list_len("subscribe patterns", verified.subscribe.len()).map_err(bad)?;
        check_patterns(verified.publish.iter().chain(&verified.subscribe))?;
        let expires_at = verified
            .expires_at
            .min(now.saturating_add(EXCHANGE_TTL_MAX));
        if expires_at <= now {
            return Err(Api::error(401, "unauthorized", "token rejected: expired"));
        }
        self.check_cap(org, Counted::Users)?;
        let username = secrets::random_id("tx_", 16).map_err(|e| store_error(e.into()))?;
        let password = secrets::random_password(32).map_err(|e| store_error(e.into()))?;
        let password_hash = secrets::hash_password(&password).map_err(|e| store_error(e.into()))?;
        // Every exchange of one subject of one provider owns the same MQTT sessions: a device that
        // renews its token resumes its session under the new credentials. The NUL keeps the
        // name apart from every username (those are `[A-Za-z0-9._-]`).
        let owner = format!("token\0{}\0{}", verified.provider, verified.subject);
        let allowed = Allowed {
            publish: verified.publish,
            subscribe: verified.subscribe,
        };
        let user = NewUser {
            username: username.clone(),
            password_hash,
            namespace: None,
            enabled: true,
            acl_sets: Vec::new(),
            expires_at: Some(expires_at),
            allowed: Some(allowed.clone()),
            owner: Some(owner),
        };
        self.store
            .create_user(org, &user, now)
            .map_err(store_error)?;
        Ok(json_response(
            201,
            &ExchangedCredentials {
                username: format!("{username}@{org}"),
                password,
                expires_at,
                allowed,
            },
        ))
    }
}
