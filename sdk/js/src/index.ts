// @ringmq/sdk: an MQTT client of ringmq (over MQTT.js) and a client of its HTTP API.
export { RingmqClient, RingmqMqttError, brokerUrl } from './client.js';
export type { RingmqClientOptions, TlsOptions, PublishOptions, SubscribeOptions, MessageHandler, Subscription, ClientEvent } from './client.js';
export { RingmqApi, Users, AclRules, AclSets, Keys, Sessions, OrgResource, Orgs, restBody } from './api.js';
export type { RingmqApiOptions, Page, ListPage, RestPublish, RestPublishOptions, PublishResult, BatchResult } from './api.js';
export { RingmqError } from './errors.js';
export { Http, retryAfterSeconds } from './http.js';
export type { HttpOptions, RequestOptions, HttpAnswer } from './http.js';
export { RingmqStream } from './stream.js';
export type { StreamFrame, StreamMessage, StreamOptions } from './stream.js';
export { decodePayload, encodePayload, toBase64, fromBase64 } from './payload.js';
export type { Publishable, DecodedMessage } from './payload.js';
export { topicMatches } from './topic.js';
export type * as ApiTypes from './generated/api-types.js';
export type {
  User, AclSet, AclSetWithRules, AclRule, Key, CreatedKey, KeyPermission, Session, Subscription as SessionSubscription,
  Org, OrgSummary, OrgSettings, OrgUsage, CreatedOrg, TokenCredentials, Settings, Operations,
  CreateUser, PatchUser, CreateSet, PatchSet, CreateRule, PatchRule, CreateKey, PatchKey, PatchOrg, CreateOrg, TokenExchange,
  Error as ApiErrorBody,
} from './generated/api-types.js';
