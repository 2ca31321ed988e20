/** What a message decodes to: a JSON value when the bytes are JSON, else a string when they are UTF-8, else the bytes. */
export type DecodedMessage = unknown;

/** What may be published: a string (sent as UTF-8), bytes (as they are) or any other value (sent as JSON). */
export type Publishable = string | Uint8Array | object | number | boolean | null;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/** Decodes a payload: the JSON value when the bytes are JSON text, else the string when they are UTF-8, else the bytes. */
export function decodePayload(bytes: Uint8Array): DecodedMessage {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  const trimmed = text.trim();
  if (trimmed !== '') {
    try {
      return JSON.parse(trimmed);
    } catch {
      // not JSON: the text itself
    }
  }
  return text;
}

/** Encodes a value for publishing: strings as UTF-8, bytes as they are, anything else as JSON text. */
export function encodePayload(value: Publishable): Uint8Array {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  const json = JSON.stringify(value);
  if (json === undefined) throw new TypeError('ringmq: payload is not JSON-serializable');
  return encoder.encode(json);
}

/** Base64 of bytes (works in Node and browsers). */
export function toBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** Bytes of base64 text (works in Node and browsers). */
export function fromBase64(text: string): Uint8Array {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
