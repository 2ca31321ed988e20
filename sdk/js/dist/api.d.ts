import { Http, type HttpOptions, type RequestOptions } from './http.js';
import { type Publishable } from './payload.js';
import { RingmqStream, type StreamOptions } from './stream.js';
import type * as T from './generated/api-types.js';
type Op<K extends keyof T.Operations> = T.Operations[K];
type Res<K extends keyof T.Operations> = Op<K>['response'];
type Body<K extends keyof T.Operations> = Op<K>['body'];
/** Paging of a list call: `limit` 1..=1000 (default 100), `cursor` from the previous page's `next_cursor`. */
export interface Page {
    /** Items per page. */
    limit?: number;
    /** The previous page's `next_cursor`. */
    cursor?: string;
}
/** A page of a list: `items` and the cursor of the next page (null on the last). */
export interface ListPage<I> {
    /** This page's items. */
    items: I[];
    /** Pass as `cursor` for the next page; null when this is the last. */
    next_cursor: string | null;
}
/** Options of {@link RingmqApi}: the broker's HTTP URL and an API key, plus retries and a timeout. */
export type RingmqApiOptions = HttpOptions;
/** A message for `POST /v1/publish` (and each entry of a batch). */
export interface RestPublish {
    /** The topic (no wildcards). */
    topic: string;
    /** A string (sent as UTF-8), bytes (sent as `payload_base64`) or any JSON value (sent as its JSON text). */
    payload?: Publishable;
    /** 0 (default: answered 202 at once) or 1 (answered 200 once queued). */
    qos?: 0 | 1;
    /** Retain the message. */
    retain?: boolean;
    /** MQTT 5 content type. */
    content_type?: string;
    /** MQTT 5 message expiry, seconds. */
    message_expiry?: number;
    /** MQTT 5 user properties. */
    user_properties?: Record<string, string> | Array<[string, string]>;
    /** MQTT 5 response topic. */
    response_topic?: string;
    /** MQTT 5 correlation data: a string, or bytes (sent as base64). */
    correlation_data?: string | Uint8Array;
}
/** The answer of a REST publish. */
export interface PublishResult {
    /** `accepted` (QoS 0) or `queued` (QoS 1). */
    status: 'accepted' | 'queued';
    /** The topic. */
    topic: string;
    /** The QoS. */
    qos: 0 | 1;
    /** QoS 1: how many subscriptions the message was queued for. */
    matched?: number;
    /** True when the answer is a replay of an earlier request with the same idempotency key. */
    replayed: boolean;
}
/** One entry of a batch answer: an HTTP-like status with the publish answer or the error. */
export interface BatchResult {
    /** 202, 200, 400, 403, … */
    status: number;
    /** The topic (successes). */
    topic?: string;
    /** The QoS (successes). */
    qos?: number;
    /** QoS 1 successes: subscriptions matched. */
    matched?: number;
    /** The error code (failures). */
    error?: string;
    /** The error sentence (failures). */
    detail?: string;
}
/** Options of a REST publish. */
export interface RestPublishOptions {
    /** `Idempotency-Key`: a retry with the same key and body within 24 h publishes nothing and gets the first answer. */
    idempotencyKey?: string;
}
/** The wire body of a REST publish message. */
export declare function restBody(m: RestPublish): Record<string, unknown>;
/** Common list helpers. */
declare abstract class Collection<I> {
    protected readonly http: Http;
    protected readonly base: string;
    /** Use {@link RingmqApi}'s properties. */
    constructor(http: Http, base: string);
    protected page(query: RequestOptions['query']): Promise<ListPage<I>>;
    /** Every item over all pages (following `next_cursor`). */
    all(query?: Omit<Record<string, string | number | undefined>, 'cursor'>): AsyncGenerator<I>;
    protected call<R>(method: string, path: string, body?: unknown): Promise<R>;
}
/** MQTT users: `/v1/users`. */
export declare class Users extends Collection<T.User> {
    /** A page of users. */
    list(page?: Page): Promise<Res<'listUsers'>>;
    /** One user. */
    get(username: string): Promise<Res<'getUser'>>;
    /** Creates a user (201). */
    create(body: Body<'createUser'>): Promise<Res<'createUser'>>;
    /** Changes a user's password, namespace, enabled flag or sets. */
    update(username: string, body: Body<'updateUser'>): Promise<Res<'updateUser'>>;
    /** Deletes a user (its connections are closed). */
    delete(username: string): Promise<void>;
}
/** ACL rules: `/v1/acl/rules`. */
export declare class AclRules extends Collection<T.AclRule> {
    /** A page of rules, optionally of one set. */
    list(page?: Page & {
        set?: string;
    }): Promise<Res<'listAclRules'>>;
    /** One rule. */
    get(id: string): Promise<Res<'getAclRule'>>;
    /** Creates a rule (in the `default` set unless `set` is given). */
    create(body: Body<'createAclRule'>): Promise<Res<'createAclRule'>>;
    /** Changes a rule's topic, action or permission. */
    update(id: string, body: Body<'updateAclRule'>): Promise<Res<'updateAclRule'>>;
    /** Deletes a rule. */
    delete(id: string): Promise<void>;
}
/** ACL rule sets: `/v1/acl/sets`. */
export declare class AclSets extends Collection<T.AclSet> {
    /** A page of sets. */
    list(page?: Page): Promise<Res<'listAclSets'>>;
    /** One set with its rules. */
    get(name: string): Promise<Res<'getAclSet'>>;
    /** Creates a set. */
    create(body: Body<'createAclSet'>): Promise<Res<'createAclSet'>>;
    /** Changes a set's description. */
    update(name: string, body: Body<'updateAclSet'>): Promise<Res<'updateAclSet'>>;
    /** Deletes a set (409 while attached, or for `default`). */
    delete(name: string): Promise<void>;
}
/** API keys: `/v1/keys`. */
export declare class Keys extends Collection<T.Key> {
    /** A page of keys. */
    list(page?: Page): Promise<Res<'listKeys'>>;
    /** One key (never its secret). */
    get(id: string): Promise<Res<'getKey'>>;
    /** Creates a key; the answer's `key` is the secret, shown only this once. */
    create(body: Body<'createKey'>): Promise<Res<'createKey'>>;
    /** Renames a key. */
    update(id: string, body: Body<'updateKey'>): Promise<Res<'updateKey'>>;
    /** Revokes a key (its streams are closed). */
    delete(id: string): Promise<void>;
}
/** MQTT sessions: `/v1/sessions`. */
export declare class Sessions extends Collection<T.Session> {
    /** A page of sessions: `state` active (the broker's default), disconnected or all; `search`: a client id or username substring. */
    list(page?: Page & {
        state?: 'active' | 'disconnected' | 'all';
        search?: string;
    }): Promise<Res<'listSessions'>>;
    /** One session by client id. */
    get(clientId: string): Promise<Res<'getSession'>>;
    /** Disconnects a client (its session stays when persistent). */
    disconnect(clientId: string): Promise<void>;
    /** Disconnects a client and discards its session. */
    delete(clientId: string): Promise<void>;
}
/** The key's own org: `/v1/org`. */
export declare class OrgResource {
    private readonly http;
    /** Use {@link RingmqApi.org}. */
    constructor(http: Http);
    /** The org with its settings and usage. */
    get(): Promise<Res<'getOrg'>>;
    /** Renames the org (settings: root key only). */
    update(body: Body<'updateOrg'>): Promise<Res<'updateOrg'>>;
}
/** All orgs (root key only): `/v1/orgs`. */
export declare class Orgs extends Collection<T.OrgSummary> {
    /** A page of orgs. */
    list(page?: Page): Promise<Res<'listOrgs'>>;
    /** One org with its usage. */
    get(id: string): Promise<Res<'getOrgById'>>;
    /** Creates an org and its first secret key. */
    create(body: Body<'createOrg'>): Promise<Res<'createOrg'>>;
    /** Changes an org's name or settings. */
    update(id: string, body: Body<'updateOrgById'>): Promise<Res<'updateOrgById'>>;
    /** Deletes an org (not `default`; its connections are closed). */
    delete(id: string): Promise<void>;
}
/**
 * The ringmq HTTP API: management (`/v1/users`, `/v1/acl/*`, `/v1/keys`, `/v1/sessions`, `/v1/org(s)`),
 * REST publish, token exchange and streams. Errors are thrown as {@link RingmqError}.
 */
export declare class RingmqApi {
    /** The HTTP transport (for calls the SDK does not wrap: `api.http.request(method, path, {query, body})`). */
    readonly http: Http;
    /** MQTT users. */
    readonly users: Users;
    /** ACL rules. */
    readonly acl: AclRules;
    /** ACL rule sets. */
    readonly aclSets: AclSets;
    /** API keys. */
    readonly keys: Keys;
    /** MQTT sessions. */
    readonly sessions: Sessions;
    /** The key's org. */
    readonly org: OrgResource;
    /** All orgs (root key). */
    readonly orgs: Orgs;
    /** `new RingmqApi({ url: 'http://127.0.0.1:8080', key: 'sk_…' })`. */
    constructor(options: RingmqApiOptions);
    /** Publishes one message over HTTP (`POST /v1/publish`). */
    publish(message: RestPublish, options?: RestPublishOptions): Promise<PublishResult>;
    /** Publishes up to 100 messages in one request (`POST /v1/publish/batch`); each entry gets its own status. */
    publishBatch(messages: RestPublish[], options?: RestPublishOptions): Promise<{
        results: BatchResult[];
        replayed: boolean;
    }>;
    /** Trades a JWT for temporary MQTT credentials (`POST /v1/token-exchange`, with an `sk_` or `pk_` key). */
    tokenExchange(token: string, provider?: string): Promise<Res<'tokenExchange'>>;
    /** The broker's OpenAPI document (`GET /v1/openapi.json`). */
    openapi(): Promise<Record<string, unknown>>;
    /** Streams messages matching `topic`: `for await (const m of api.stream({ topic: 'a/#' })) …`; SSE by default, or WebSocket. */
    stream(options?: StreamOptions): RingmqStream;
}
export {};
