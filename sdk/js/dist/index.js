// @ringmq/sdk: an MQTT client of ringmq (over MQTT.js) and a client of its HTTP API.
export { RingmqClient, RingmqMqttError, brokerUrl } from './client.js';
export { RingmqApi, Users, AclRules, AclSets, Keys, Sessions, OrgResource, Orgs, restBody } from './api.js';
export { RingmqError } from './errors.js';
export { Http, retryAfterSeconds } from './http.js';
export { RingmqStream } from './stream.js';
export { decodePayload, encodePayload, toBase64, fromBase64 } from './payload.js';
export { topicMatches } from './topic.js';
