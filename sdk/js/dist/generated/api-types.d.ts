/** The `Error` schema. */
export interface Error {
    error: string;
    detail: string;
}
/** The `Settings` schema. */
export interface Settings {
    rate_limit_per_sec?: number;
    rate_burst?: number;
    monthly_quota?: number;
    connections_max?: number;
}
/** The `CreateUser` schema. */
export interface CreateUser {
    username: string;
    password: string;
    namespace?: string | null;
    enabled?: boolean;
    acl_sets?: string[];
}
/** The `PatchUser` schema. */
export interface PatchUser {
    password?: string;
    namespace?: string | null;
    enabled?: boolean;
    acl_sets?: string[];
}
/** The `CreateSet` schema. */
export interface CreateSet {
    name: string;
    description?: string;
}
/** The `PatchSet` schema. */
export interface PatchSet {
    description: string;
}
/** The `CreateRule` schema. */
export interface CreateRule {
    topic: string;
    action: "publish" | "subscribe" | "all";
    permission: "allow" | "deny";
    set?: string;
}
/** The `PatchRule` schema. */
export interface PatchRule {
    topic?: string;
    action?: "publish" | "subscribe" | "all";
    permission?: "allow" | "deny";
}
/** The `CreateKey` schema. */
export interface CreateKey {
    name: string;
    kind: "secret" | "public" | "restricted";
    permissions?: {
        action: "publish" | "subscribe" | "all";
        topic: string;
    }[];
    acl_sets?: string[];
}
/** The `PatchKey` schema. */
export interface PatchKey {
    name: string;
}
/** The `PatchOrg` schema. */
export interface PatchOrg {
    name?: string;
    settings?: Settings;
}
/** The `CreateOrg` schema. */
export interface CreateOrg {
    name: string;
    settings?: Settings;
}
/** The `TokenExchange` schema. */
export interface TokenExchange {
    token: string;
    provider?: string;
}
/** An MQTT user (never its password) */
export interface User {
    username: string;
    namespace: string | null;
    enabled: boolean;
    acl_sets: string[];
    created_at: number;
    updated_at: number;
    expires_at: number | null;
}
/** An ACL rule set */
export interface AclSet {
    name: string;
    description: string;
    rule_count: number;
    created_at: number;
}
/** An ACL rule */
export interface AclRule {
    id: string;
    set: string;
    permission: "allow" | "deny";
    action: "publish" | "subscribe" | "all";
    topic: string;
    created_at: number;
}
/** An ACL rule set with its rules */
export interface AclSetWithRules {
    name: string;
    description: string;
    rule_count: number;
    created_at: number;
    rules: AclRule[];
}
/** What a restricted key may do */
export interface KeyPermission {
    action: "publish" | "subscribe" | "all";
    topic: string;
}
/** An API key (without its secret) */
export interface Key {
    id: string;
    name: string;
    kind: "secret" | "public" | "restricted";
    prefix: string;
    permissions: KeyPermission[];
    acl_sets: string[];
    created_at: number;
    last_used_at: number | null;
    revoked_at: number | null;
}
/** A new API key with its secret `key`, shown only in this answer */
export interface CreatedKey {
    id: string;
    name: string;
    kind: "secret" | "public" | "restricted";
    prefix: string;
    permissions: KeyPermission[];
    acl_sets: string[];
    created_at: number;
    last_used_at: number | null;
    revoked_at: number | null;
    key: string;
}
/** A session's subscription */
export interface Subscription {
    filter: string;
    qos: number;
}
/** An MQTT session */
export interface Session {
    client_id: string;
    username: string | null;
    connected: boolean;
    shard: number;
    address: string | null;
    connected_at: number | null;
    subscriptions: Subscription[];
    queued: number;
}
/** An org's limits */
export interface OrgSettings {
    rate_limit_per_sec: number;
    rate_burst: number;
    monthly_quota: number;
    connections_max: number;
}
/** An org's usage this month */
export interface OrgUsage {
    connections: number;
    messages_in: number;
    messages_out: number;
    rest_publishes: number;
    /** YYYY-MM */
    month: string;
}
/** An org as listed and created (without usage) */
export interface OrgSummary {
    id: string;
    name: string;
    created_at: number;
    settings: OrgSettings;
}
/** An org with its settings and usage */
export interface Org {
    id: string;
    name: string;
    created_at: number;
    settings: OrgSettings;
    usage: OrgUsage;
}
/** A new org and its first secret key */
export interface CreatedOrg {
    org: OrgSummary;
    key: CreatedKey;
}
/** Temporary MQTT credentials from a token exchange */
export interface TokenCredentials {
    username: string;
    password: string;
    expires_at: number;
    /** The topic patterns the credentials may use */
    allowed: {
        publish: string[];
        subscribe: string[];
    };
}
/** A page of User objects: pass next_cursor as ?cursor= for the next (null: the last page) */
export interface UserList {
    items: User[];
    next_cursor: string | null;
}
/** A page of AclSet objects: pass next_cursor as ?cursor= for the next (null: the last page) */
export interface AclSetList {
    items: AclSet[];
    next_cursor: string | null;
}
/** A page of AclRule objects: pass next_cursor as ?cursor= for the next (null: the last page) */
export interface AclRuleList {
    items: AclRule[];
    next_cursor: string | null;
}
/** A page of Key objects: pass next_cursor as ?cursor= for the next (null: the last page) */
export interface KeyList {
    items: Key[];
    next_cursor: string | null;
}
/** A page of Session objects: pass next_cursor as ?cursor= for the next (null: the last page) */
export interface SessionList {
    items: Session[];
    next_cursor: string | null;
}
/** A page of OrgSummary objects: pass next_cursor as ?cursor= for the next (null: the last page) */
export interface OrgList {
    items: OrgSummary[];
    next_cursor: string | null;
}
/** Every operation of the document by operationId: method, path, parameters, body and answer. */
export interface Operations {
    /** The OpenAPI document (no auth) */
    getOpenApi: {
        method: "GET";
        path: "/v1/openapi.json";
        status: 200;
        pathParams: never;
        query: never;
        body: never;
        response: Record<string, unknown>;
    };
    /** List MQTT users */
    listUsers: {
        method: "GET";
        path: "/v1/users";
        status: 200;
        pathParams: never;
        query: {
            limit?: number;
            cursor?: string;
        };
        body: never;
        response: UserList;
    };
    /** Create an MQTT user */
    createUser: {
        method: "POST";
        path: "/v1/users";
        status: 201;
        pathParams: never;
        query: never;
        body: CreateUser;
        response: User;
    };
    /** Get a user */
    getUser: {
        method: "GET";
        path: "/v1/users/{username}";
        status: 200;
        pathParams: {
            username: string;
        };
        query: never;
        body: never;
        response: User;
    };
    /** Change a user */
    updateUser: {
        method: "PATCH";
        path: "/v1/users/{username}";
        status: 200;
        pathParams: {
            username: string;
        };
        query: never;
        body: PatchUser;
        response: User;
    };
    /** Delete a user */
    deleteUser: {
        method: "DELETE";
        path: "/v1/users/{username}";
        status: 204;
        pathParams: {
            username: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** List ACL rule sets */
    listAclSets: {
        method: "GET";
        path: "/v1/acl/sets";
        status: 200;
        pathParams: never;
        query: {
            limit?: number;
            cursor?: string;
        };
        body: never;
        response: AclSetList;
    };
    /** Create a rule set */
    createAclSet: {
        method: "POST";
        path: "/v1/acl/sets";
        status: 201;
        pathParams: never;
        query: never;
        body: CreateSet;
        response: AclSet;
    };
    /** Get a rule set with its rules */
    getAclSet: {
        method: "GET";
        path: "/v1/acl/sets/{name}";
        status: 200;
        pathParams: {
            name: string;
        };
        query: never;
        body: never;
        response: AclSetWithRules;
    };
    /** Change a set's description */
    updateAclSet: {
        method: "PATCH";
        path: "/v1/acl/sets/{name}";
        status: 200;
        pathParams: {
            name: string;
        };
        query: never;
        body: PatchSet;
        response: AclSet;
    };
    /** Delete a rule set */
    deleteAclSet: {
        method: "DELETE";
        path: "/v1/acl/sets/{name}";
        status: 204;
        pathParams: {
            name: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** List ACL rules (optionally ?set=NAME) */
    listAclRules: {
        method: "GET";
        path: "/v1/acl/rules";
        status: 200;
        pathParams: never;
        query: {
            limit?: number;
            cursor?: string;
            /** only the rules of this set */
            set?: string;
        };
        body: never;
        response: AclRuleList;
    };
    /** Create an ACL rule */
    createAclRule: {
        method: "POST";
        path: "/v1/acl/rules";
        status: 201;
        pathParams: never;
        query: never;
        body: CreateRule;
        response: AclRule;
    };
    /** Get a rule */
    getAclRule: {
        method: "GET";
        path: "/v1/acl/rules/{id}";
        status: 200;
        pathParams: {
            id: string;
        };
        query: never;
        body: never;
        response: AclRule;
    };
    /** Change a rule */
    updateAclRule: {
        method: "PATCH";
        path: "/v1/acl/rules/{id}";
        status: 200;
        pathParams: {
            id: string;
        };
        query: never;
        body: PatchRule;
        response: AclRule;
    };
    /** Delete a rule */
    deleteAclRule: {
        method: "DELETE";
        path: "/v1/acl/rules/{id}";
        status: 204;
        pathParams: {
            id: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** List API keys */
    listKeys: {
        method: "GET";
        path: "/v1/keys";
        status: 200;
        pathParams: never;
        query: {
            limit?: number;
            cursor?: string;
        };
        body: never;
        response: KeyList;
    };
    /** Create an API key (secret shown once) */
    createKey: {
        method: "POST";
        path: "/v1/keys";
        status: 201;
        pathParams: never;
        query: never;
        body: CreateKey;
        response: CreatedKey;
    };
    /** Get an API key */
    getKey: {
        method: "GET";
        path: "/v1/keys/{id}";
        status: 200;
        pathParams: {
            id: string;
        };
        query: never;
        body: never;
        response: Key;
    };
    /** Rename an API key */
    updateKey: {
        method: "PATCH";
        path: "/v1/keys/{id}";
        status: 200;
        pathParams: {
            id: string;
        };
        query: never;
        body: PatchKey;
        response: Key;
    };
    /** Revoke an API key */
    deleteKey: {
        method: "DELETE";
        path: "/v1/keys/{id}";
        status: 204;
        pathParams: {
            id: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** List MQTT sessions (?state=active|disconnected|all) */
    listSessions: {
        method: "GET";
        path: "/v1/sessions";
        status: 200;
        pathParams: never;
        query: {
            limit?: number;
            cursor?: string;
            /** active (the default: connected clients), disconnected or all */
            state?: "active" | "disconnected" | "all";
            /** only sessions whose client id or username contains this text (at most 256 bytes) */
            search?: string;
        };
        body: never;
        response: SessionList;
    };
    /** Get a session */
    getSession: {
        method: "GET";
        path: "/v1/sessions/{client_id}";
        status: 200;
        pathParams: {
            client_id: string;
        };
        query: never;
        body: never;
        response: Session;
    };
    /** Disconnect and discard a session */
    deleteSession: {
        method: "DELETE";
        path: "/v1/sessions/{client_id}";
        status: 204;
        pathParams: {
            client_id: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** Disconnect a client */
    disconnectSession: {
        method: "POST";
        path: "/v1/sessions/{client_id}/disconnect";
        status: 204;
        pathParams: {
            client_id: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** The key's org with usage */
    getOrg: {
        method: "GET";
        path: "/v1/org";
        status: 200;
        pathParams: never;
        query: never;
        body: never;
        response: Org;
    };
    /** Rename the org; settings only with the root key */
    updateOrg: {
        method: "PATCH";
        path: "/v1/org";
        status: 200;
        pathParams: never;
        query: never;
        body: PatchOrg;
        response: Org;
    };
    /** List orgs (root key) */
    listOrgs: {
        method: "GET";
        path: "/v1/orgs";
        status: 200;
        pathParams: never;
        query: {
            limit?: number;
            cursor?: string;
        };
        body: never;
        response: OrgList;
    };
    /** Create an org and its first secret key (root key) */
    createOrg: {
        method: "POST";
        path: "/v1/orgs";
        status: 201;
        pathParams: never;
        query: never;
        body: CreateOrg;
        response: CreatedOrg;
    };
    /** Get an org (root key) */
    getOrgById: {
        method: "GET";
        path: "/v1/orgs/{id}";
        status: 200;
        pathParams: {
            id: string;
        };
        query: never;
        body: never;
        response: Org;
    };
    /** Change an org's name or settings (root key only) */
    updateOrgById: {
        method: "PATCH";
        path: "/v1/orgs/{id}";
        status: 200;
        pathParams: {
            id: string;
        };
        query: never;
        body: PatchOrg;
        response: Org;
    };
    /** Delete an org (root key) */
    deleteOrg: {
        method: "DELETE";
        path: "/v1/orgs/{id}";
        status: 204;
        pathParams: {
            id: string;
        };
        query: never;
        body: never;
        response: void;
    };
    /** Exchange a JWT for temporary MQTT credentials */
    tokenExchange: {
        method: "POST";
        path: "/v1/token-exchange";
        status: 201;
        pathParams: never;
        query: never;
        body: TokenExchange;
        response: TokenCredentials;
    };
}
/** The names of the document's component schemas. */
export declare const SCHEMA_NAMES: readonly ["Error", "Settings", "CreateUser", "PatchUser", "CreateSet", "PatchSet", "CreateRule", "PatchRule", "CreateKey", "PatchKey", "PatchOrg", "CreateOrg", "TokenExchange", "User", "AclSet", "AclRule", "AclSetWithRules", "KeyPermission", "Key", "CreatedKey", "Subscription", "Session", "OrgSettings", "OrgUsage", "OrgSummary", "Org", "CreatedOrg", "TokenCredentials", "UserList", "AclSetList", "AclRuleList", "KeyList", "SessionList", "OrgList"];
