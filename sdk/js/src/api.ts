import { Http, type HttpOptions, type RequestOptions } from './http.js';
import { encodePayload, toBase64, type Publishable } from './payload.js';
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
export function restBody(m: RestPublish): Record<string, unknown> {
  const { payload, correlation_data, ...rest } = m;
  const out: Record<string, unknown> = { ...rest };
  if (payload instanceof Uint8Array || payload instanceof ArrayBuffer) out.payload_base64 = toBase64(encodePayload(payload));
  else if (payload !== undefined) out.payload = payload;
  if (correlation_data instanceof Uint8Array) out.correlation_data_base64 = toBase64(correlation_data);
  else if (correlation_data !== undefined) out.correlation_data = correlation_data;
  return out;
}

const seg = (id: string) => encodeURIComponent(id);

/** Common list helpers. */
abstract class Collection<I> {
  /** Use {@link RingmqApi}'s properties. */
  constructor(protected readonly http: Http, protected readonly base: string) {}

  protected async page(query: RequestOptions['query']): Promise<ListPage<I>> {
    return (await this.http.request<ListPage<I>>('GET', this.base, { query })).body;
  }

  /** Every item over all pages (following `next_cursor`). */
  async *all(query: Omit<Record<string, string | number | undefined>, 'cursor'> = {}): AsyncGenerator<I> {
    let cursor: string | undefined;
    do {
      const p = await this.page({ ...query, cursor });
      yield* p.items;
      cursor = p.next_cursor ?? undefined;
    } while (cursor);
  }

  protected async call<R>(method: string, path: string, body?: unknown): Promise<R> {
    return (await this.http.request<R>(method, path, body === undefined ? {} : { body })).body;
  }
}

/** MQTT users: `/v1/users`. */
export class Users extends Collection<T.User> {
  /** A page of users. */
  list(page: Page = {}): Promise<Res<'listUsers'>> { return this.page({ ...page }); }
  /** One user. */
  get(username: string): Promise<Res<'getUser'>> { return this.call('GET', `${this.base}/${seg(username)}`); }
  /** Creates a user (201). */
  create(body: Body<'createUser'>): Promise<Res<'createUser'>> { return this.call('POST', this.base, body); }
  /** Changes a user's password, namespace, enabled flag or sets. */
  update(username: string, body: Body<'updateUser'>): Promise<Res<'updateUser'>> { return this.call('PATCH', `${this.base}/${seg(username)}`, body); }
  /** Deletes a user (its connections are closed). */
  async delete(username: string): Promise<void> { await this.call('DELETE', `${this.base}/${seg(username)}`); }
}

/** ACL rules: `/v1/acl/rules`. */
export class AclRules extends Collection<T.AclRule> {
  /** A page of rules, optionally of one set. */
  list(page: Page & { set?: string } = {}): Promise<Res<'listAclRules'>> { return this.page({ ...page }); }
  /** One rule. */
  get(id: string): Promise<Res<'getAclRule'>> { return this.call('GET', `${this.base}/${seg(id)}`); }
  /** Creates a rule (in the `default` set unless `set` is given). */
  create(body: Body<'createAclRule'>): Promise<Res<'createAclRule'>> { return this.call('POST', this.base, body); }
  /** Changes a rule's topic, action or permission. */
  update(id: string, body: Body<'updateAclRule'>): Promise<Res<'updateAclRule'>> { return this.call('PATCH', `${this.base}/${seg(id)}`, body); }
  /** Deletes a rule. */
  async delete(id: string): Promise<void> { await this.call('DELETE', `${this.base}/${seg(id)}`); }
}

/** ACL rule sets: `/v1/acl/sets`. */
export class AclSets extends Collection<T.AclSet> {
  /** A page of sets. */
  list(page: Page = {}): Promise<Res<'listAclSets'>> { return this.page({ ...page }); }
  /** One set with its rules. */
  get(name: string): Promise<Res<'getAclSet'>> { return this.call('GET', `${this.base}/${seg(name)}`); }
  /** Creates a set. */
  create(body: Body<'createAclSet'>): Promise<Res<'createAclSet'>> { return this.call('POST', this.base, body); }
  /** Changes a set's description. */
  update(name: string, body: Body<'updateAclSet'>): Promise<Res<'updateAclSet'>> { return this.call('PATCH', `${this.base}/${seg(name)}`, body); }
  /** Deletes a set (409 while attached, or for `default`). */
  async delete(name: string): Promise<void> { await this.call('DELETE', `${this.base}/${seg(name)}`); }
}

/** API keys: `/v1/keys`. */
export class Keys extends Collection<T.Key> {
  /** A page of keys. */
  list(page: Page = {}): Promise<Res<'listKeys'>> { return this.page({ ...page }); }
  /** One key (never its secret). */
  get(id: string): Promise<Res<'getKey'>> { return this.call('GET', `${this.base}/${seg(id)}`); }
  /** Creates a key; the answer's `key` is the secret, shown only this once. */
  create(body: Body<'createKey'>): Promise<Res<'createKey'>> { return this.call('POST', this.base, body); }
  /** Renames a key. */
  update(id: string, body: Body<'updateKey'>): Promise<Res<'updateKey'>> { return this.call('PATCH', `${this.base}/${seg(id)}`, body); }
  /** Revokes a key (its streams are closed). */
  async delete(id: string): Promise<void> { await this.call('DELETE', `${this.base}/${seg(id)}`); }
}

/** MQTT sessions: `/v1/sessions`. */
export class Sessions extends Collection<T.Session> {
  /** A page of sessions: `state` active (the broker's default), disconnected or all; `search`: a client id or username substring. */
  list(page: Page & { state?: 'active' | 'disconnected' | 'all'; search?: string } = {}): Promise<Res<'listSessions'>> { return this.page({ ...page }); }
  /** One session by client id. */
  get(clientId: string): Promise<Res<'getSession'>> { return this.call('GET', `${this.base}/${seg(clientId)}`); }
  /** Disconnects a client (its session stays when persistent). */
  async disconnect(clientId: string): Promise<void> { await this.call('POST', `${this.base}/${seg(clientId)}/disconnect`); }
  /** Disconnects a client and discards its session. */
  async delete(clientId: string): Promise<void> { await this.call('DELETE', `${this.base}/${seg(clientId)}`); }
}

/** The key's own org: `/v1/org`. */
export class OrgResource {
  /** Use {@link RingmqApi.org}. */
  constructor(private readonly http: Http) {}
  /** The org with its settings and usage. */
  async get(): Promise<Res<'getOrg'>> { return (await this.http.request<Res<'getOrg'>>('GET', '/v1/org')).body; }
  /** Renames the org (settings: root key only). */
  async update(body: Body<'updateOrg'>): Promise<Res<'updateOrg'>> { return (await this.http.request<Res<'updateOrg'>>('PATCH', '/v1/org', { body })).body; }
}

/** All orgs (root key only): `/v1/orgs`. */
export class Orgs extends Collection<T.OrgSummary> {
  /** A page of orgs. */
  list(page: Page = {}): Promise<Res<'listOrgs'>> { return this.page({ ...page }); }
  /** One org with its usage. */
  get(id: string): Promise<Res<'getOrgById'>> { return this.call('GET', `${this.base}/${seg(id)}`); }
  /** Creates an org and its first secret key. */
  create(body: Body<'createOrg'>): Promise<Res<'createOrg'>> { return this.call('POST', this.base, body); }
  /** Changes an org's name or settings. */
  update(id: string, body: Body<'updateOrgById'>): Promise<Res<'updateOrgById'>> { return this.call('PATCH', `${this.base}/${seg(id)}`, body); }
  /** Deletes an org (not `default`; its connections are closed). */
  async delete(id: string): Promise<void> { await this.call('DELETE', `${this.base}/${seg(id)}`); }
}

/**
 * The ringmq HTTP API: management (`/v1/users`, `/v1/acl/*`, `/v1/keys`, `/v1/sessions`, `/v1/org(s)`),
 * REST publish, token exchange and streams. Errors are thrown as {@link RingmqError}.
 */
export class RingmqApi {
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
  constructor(options: RingmqApiOptions) {
    this.http = new Http(options);
    this.users = new Users(this.http, '/v1/users');
    this.acl = new AclRules(this.http, '/v1/acl/rules');
    this.aclSets = new AclSets(this.http, '/v1/acl/sets');
    this.keys = new Keys(this.http, '/v1/keys');
    this.sessions = new Sessions(this.http, '/v1/sessions');
    this.org = new OrgResource(this.http);
    this.orgs = new Orgs(this.http, '/v1/orgs');
  }

  /** Publishes one message over HTTP (`POST /v1/publish`). */
  async publish(message: RestPublish, options: RestPublishOptions = {}): Promise<PublishResult> {
    const headers: Record<string, string> = options.idempotencyKey ? { 'Idempotency-Key': options.idempotencyKey } : {};
    const r = await this.http.request<Omit<PublishResult, 'replayed'>>('POST', '/v1/publish', { body: restBody(message), headers });
    return { ...r.body, replayed: r.headers.get('idempotent-replayed') === 'true' };
  }

  /** Publishes up to 100 messages in one request (`POST /v1/publish/batch`); each entry gets its own status. */
  async publishBatch(messages: RestPublish[], options: RestPublishOptions = {}): Promise<{ results: BatchResult[]; replayed: boolean }> {
    const headers: Record<string, string> = options.idempotencyKey ? { 'Idempotency-Key': options.idempotencyKey } : {};
    const r = await this.http.request<{ results: BatchResult[] }>('POST', '/v1/publish/batch', { body: { messages: messages.map(restBody) }, headers });
    return { results: r.body.results, replayed: r.headers.get('idempotent-replayed') === 'true' };
  }

  /** Trades a JWT for temporary MQTT credentials (`POST /v1/token-exchange`, with an `sk_` or `pk_` key). */
  async tokenExchange(token: string, provider?: string): Promise<Res<'tokenExchange'>> {
    const body: Body<'tokenExchange'> = provider === undefined ? { token } : { token, provider };
    return (await this.http.request<Res<'tokenExchange'>>('POST', '/v1/token-exchange', { body })).body;
  }

  /** The broker's OpenAPI document (`GET /v1/openapi.json`). */
  async openapi(): Promise<Record<string, unknown>> {
    return (await this.http.request<Record<string, unknown>>('GET', '/v1/openapi.json')).body;
  }

  /** Streams messages matching `topic`: `for await (const m of api.stream({ topic: 'a/#' })) …`; SSE by default, or WebSocket. */
  stream(options: StreamOptions = {}): RingmqStream {
    return new RingmqStream(this.http, options);
  }
}
