import { describe, expect, it } from 'vitest';
import { clientErrorCode, toSyncgateError } from '../../../src/http/errors.js';

describe('framework errors', () => {
  it("maps Node's HTTP parser refusals to codes, also those a test cannot provoke quickly", () => {
    // a request line or headers that do not arrive within http.Server#headersTimeout (a minute)
    expect(clientErrorCode('ERR_HTTP_REQUEST_TIMEOUT')).toBe('SG_ERR_REQUEST_TIMEOUT');
    expect(clientErrorCode('HPE_HEADER_OVERFLOW')).toBe('SG_ERR_HEADERS_TOO_LARGE');
    expect(clientErrorCode('HPE_CHUNK_EXTENSIONS_OVERFLOW')).toBe('SG_ERR_BODY_TOO_LARGE');
    expect(clientErrorCode('HPE_INVALID_METHOD')).toBe('SG_ERR_REQUEST_INVALID');
    expect(clientErrorCode(undefined)).toBe('SG_ERR_REQUEST_INVALID');
  });

  it('does not echo the path of a refused URL (it may carry an access_token)', () => {
    const err = Object.assign(new Error("'/v1/stream?access_token=sgd_secret%zz' is not a valid url component"), { code: 'FST_ERR_BAD_URL', statusCode: 400 });
    const sg = toSyncgateError(err);
    expect(sg.code).toBe('SG_ERR_REQUEST_INVALID');
    expect(sg.message).not.toContain('sgd_secret');
  });
});
