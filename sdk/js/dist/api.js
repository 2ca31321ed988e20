import { Http } from './http.js';
import { encodePayload, toBase64 } from './payload.js';
import { RingmqStream } from './stream.js';
/** The wire body of a REST publish message. */
export function restBody(m) {
    const { payload, correlation_data, ...rest } = m;
    const out = { ...rest };
    if (payload instanceof Uint8Array || payload instanceof ArrayBuffer)
        out.payload_base64 = toBase64(encodePayload(payload));
    else if (payload !== undefined)
        out.payload = payload;
    if (correlation_data instanceof Uint8Array)
        out.correlation_data_base64 = toBase64(correlation_data);
    else if (correlation_data !== undefined)
        out.correlation_data = correlation_data;
    return out;
}
const seg = (id) => encodeURIComponent(id);
/** Common list helpers. */
class Collection {
    http;
    base;
    /** Use {@link RingmqApi}'s properties. */
    constructor(http, base) {
        this.http = http;
        this.base = base;
    }
    async page(query) {
        return (await this.http.request('GET', this.base, { query })).body;
    }
    /** Every item over all pages (following `next_cursor`). */
    async *all(query = {}) {
        let cursor;
        do {
            const p = await this.page({ ...query, cursor });
            yield* p.items;
            cursor = p.next_cursor ?? undefined;
        } while (cursor);
    }
    async call(method, path, body) {
        return (await this.http.request(method, path, body === undefined ? {} : { body })).body;
    }
}
/** MQTT users: `/v1/users`. */
export class Users extends Collection {
    /** A page of users. */
    list(page = {}) { return this.page({ ...page }); }
    /** One user. */
    get(username) { return this.call('GET', `${this.base}/${seg(username)}`); }
    /** Creates a user (201). */
    create(body) { return this.call('POST', this.base, body); }
    /** Changes a user's password, namespace, enabled flag or sets. */
    update(username, body) { return this.call('PATCH', `${this.base}/${seg(username)}`, body); }
    /** Deletes a user (its connections are closed). */
    async delete(username) { await this.call('DELETE', `${this.base}/${seg(username)}`); }
}
/** ACL rules: `/v1/acl/rules`. */
export class AclRules extends Collection {
    /** A page of rules, optionally of one set. */
    list(page = {}) { return this.page({ ...page }); }
    /** One rule. */
    get(id) { return this.call('GET', `${this.base}/${seg(id)}`); }
    /** Creates a rule (in the `default` set unless `set` is given). */
    create(body) { return this.call('POST', this.base, body); }
    /** Changes a rule's topic, action or permission. */
    update(id, body) { return this.call('PATCH', `${this.base}/${seg(id)}`, body); }
    /** Deletes a rule. */
    async delete(id) { await this.call('DELETE', `${this.base}/${seg(id)}`); }
}
/** ACL rule sets: `/v1/acl/sets`. */
export class AclSets extends Collection {
    /** A page of sets. */
    list(page = {}) { return this.page({ ...page }); }
    /** One set with its rules. */
    get(name) { return this.call('GET', `${this.base}/${seg(name)}`); }
    /** Creates a set. */
    create(body) { return this.call('POST', this.base, body); }
    /** Changes a set's description. */
    update(name, body) { return this.call('PATCH', `${this.base}/${seg(name)}`, body); }
    /** Deletes a set (409 while attached, or for `default`). */
    async delete(name) { await this.call('DELETE', `${this.base}/${seg(name)}`); }
}
/** API keys: `/v1/keys`. */
export class Keys extends Collection {
    /** A page of keys. */
    list(page = {}) { return this.page({ ...page }); }
    /** One key (never its secret). */
    get(id) { return this.call('GET', `${this.base}/${seg(id)}`); }
    /** Creates a key; the answer's `key` is the secret, shown only this once. */
    create(body) { return this.call('POST', this.base, body); }
    /** Renames a key. */
    update(id, body) { return this.call('PATCH', `${this.base}/${seg(id)}`, body); }
    /** Revokes a key (its streams are closed). */
    async delete(id) { await this.call('DELETE', `${this.base}/${seg(id)}`); }
}
/** MQTT sessions: `/v1/sessions`. */
export class Sessions extends Collection {
    /** A page of sessions: `state` active (the broker's default), disconnected or all; `search`: a client id or username substring. */
    list(page = {}) { return this.page({ ...page }); }
    /** One session by client id. */
    get(clientId) { return this.call('GET', `${this.base}/${seg(clientId)}`); }
    /** Disconnects a client (its session stays when persistent). */
    async disconnect(clientId) { await this.call('POST', `${this.base}/${seg(clientId)}/disconnect`); }
    /** Disconnects a client and discards its session. */
    async delete(clientId) { await this.call('DELETE', `${this.base}/${seg(clientId)}`); }
}
/** The key's own org: `/v1/org`. */
export class OrgResource {
    http;
    /** Use {@link RingmqApi.org}. */
    constructor(http) {
        this.http = http;
    }
    /** The org with its settings and usage. */
    async get() { return (await this.http.request('GET', '/v1/org')).body; }
    /** Renames the org (settings: root key only). */
    async update(body) { return (await this.http.request('PATCH', '/v1/org', { body })).body; }
}
/** All orgs (root key only): `/v1/orgs`. */
export class Orgs extends Collection {
    /** A page of orgs. */
    list(page = {}) { return this.page({ ...page }); }
    /** One org with its usage. */
    get(id) { return this.call('GET', `${this.base}/${seg(id)}`); }
    /** Creates an org and its first secret key. */
    create(body) { return this.call('POST', this.base, body); }
    /** Changes an org's name or settings. */
    update(id, body) { return this.call('PATCH', `${this.base}/${seg(id)}`, body); }
    /** Deletes an org (not `default`; its connections are closed). */
    async delete(id) { await this.call('DELETE', `${this.base}/${seg(id)}`); }
}
/**
 * The ringmq HTTP API: management (`/v1/users`, `/v1/acl/*`, `/v1/keys`, `/v1/sessions`, `/v1/org(s)`),
 * REST publish, token exchange and streams. Errors are thrown as {@link RingmqError}.
 */
export class RingmqApi {
    /** The HTTP transport (for calls the SDK does not wrap: `api.http.request(method, path, {query, body})`). */
    http;
    /** MQTT users. */
    users;
    /** ACL rules. */
    acl;
    /** ACL rule sets. */
    aclSets;
    /** API keys. */
    keys;
    /** MQTT sessions. */
    sessions;
    /** The key's org. */
    org;
    /** All orgs (root key). */
    orgs;
    /** `new RingmqApi({ url: 'http://127.0.0.1:8080', key: 'sk_…' })`. */
    constructor(options) {
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
    async publish(message, options = {}) {
        const headers = options.idempotencyKey ? { 'Idempotency-Key': options.idempotencyKey } : {};
        const r = await this.http.request('POST', '/v1/publish', { body: restBody(message), headers });
        return { ...r.body, replayed: r.headers.get('idempotent-replayed') === 'true' };
    }
    /** Publishes up to 100 messages in one request (`POST /v1/publish/batch`); each entry gets its own status. */
    async publishBatch(messages, options = {}) {
        const headers = options.idempotencyKey ? { 'Idempotency-Key': options.idempotencyKey } : {};
        const r = await this.http.request('POST', '/v1/publish/batch', { body: { messages: messages.map(restBody) }, headers });
        return { results: r.body.results, replayed: r.headers.get('idempotent-replayed') === 'true' };
    }
    /** Trades a JWT for temporary MQTT credentials (`POST /v1/token-exchange`, with an `sk_` or `pk_` key). */
    async tokenExchange(token, provider) {
        const body = provider === undefined ? { token } : { token, provider };
        return (await this.http.request('POST', '/v1/token-exchange', { body })).body;
    }
    /** The broker's OpenAPI document (`GET /v1/openapi.json`). */
    async openapi() {
        return (await this.http.request('GET', '/v1/openapi.json')).body;
    }
    /** Streams messages matching `topic`: `for await (const m of api.stream({ topic: 'a/#' })) …`; SSE by default, or WebSocket. */
    stream(options = {}) {
        return new RingmqStream(this.http, options);
    }
}
