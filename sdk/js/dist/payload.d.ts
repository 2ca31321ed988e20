/** What a message decodes to: a JSON value when the bytes are JSON, else a string when they are UTF-8, else the bytes. */
export type DecodedMessage = unknown;
/** What may be published: a string (sent as UTF-8), bytes (as they are) or any other value (sent as JSON). */
export type Publishable = string | Uint8Array | object | number | boolean | null;
/** Decodes a payload: the JSON value when the bytes are JSON text, else the string when they are UTF-8, else the bytes. */
export declare function decodePayload(bytes: Uint8Array): DecodedMessage;
/** Encodes a value for publishing: strings as UTF-8, bytes as they are, anything else as JSON text. */
export declare function encodePayload(value: Publishable): Uint8Array;
/** Base64 of bytes (works in Node and browsers). */
export declare function toBase64(bytes: Uint8Array): string;
/** Bytes of base64 text (works in Node and browsers). */
export declare function fromBase64(text: string): Uint8Array;
