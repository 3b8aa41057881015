/**
 * The Socks Lib of RFC 3089: the client half of the SOCKS-based IPv6/IPv4
 * gateway mechanism. Connect through one gateway or a chain
 * ({@linkcode connect}, {@linkcode connectTls}), delegate name resolution to
 * the gateway with fake addresses ({@linkcode FakeDns}), socksify the
 * running process ({@linkcode socksify}), forward a local port
 * ({@linkcode forward}), and BIND / UDP ASSOCIATE.
 *
 * @example
 * ```ts ignore
 * import { connect } from "./mod.ts";
 * const conn = await connect("v4only.test:80", {
 *   via: ["socks5://[2001:db8::1]:1080", "socks5://192.0.2.7:1080"],
 * });
 * conn.close();
 * ```
 *
 * @module
 */

export {
  DEFAULT_SOCKS_PORT,
  formatTarget,
  parseGateway,
  parseTarget,
  type SocksGateway,
  type SocksHop,
  type SocksTarget,
  type SocksTargetInit,
  type SocksVia,
} from "./address.ts";
export { DEFAULT_DOWN_FOR_MS, type DialOptions, gatewaysDown, resetGatewayHealth } from "./dial.ts";
export {
  connect,
  type ConnectOptions,
  connectTls,
  type ConnectTlsOptions,
  SocksConn,
  type SocksConnInit,
  type SocksInfo,
  type SocksTlsConn,
  startTls,
  type StartTlsOptions,
} from "./connect.ts";
export {
  AllGatewaysFailedError,
  FakeDnsExhaustedError,
  type GatewayFailure,
  GatewayUnreachableError,
  SocksAuthError,
  SocksClosedError,
  SocksError,
  type SocksErrorInit,
  SocksProtocolError,
  SocksReplyError,
  SocksTimeoutError,
  UnmappedFakeAddressError,
} from "./errors.ts";
export { FakeDns, type FakeDnsOptions, type FakeDnsSnapshot } from "./fake_dns.ts";
export type { SocksAddress, SocksReply } from "../protocol/codec.ts";
export {
  handshake,
  type HandshakeOptions,
  type HandshakeResult,
  type HandshakeStream,
} from "./handshake.ts";
export {
  createHttpClient,
  type SocksHttpClientOptions,
  type Socksified,
  socksify,
  type SocksifyOptions,
  type SocksifyPart,
} from "./socksify.ts";
export { forward, type Forwarder, type ForwardOptions } from "./forward.ts";
export { bind, type BindOptions, type SocksBinding } from "./bind.ts";
export {
  type SocksDatagram,
  type SocksUdpAssociation,
  udpAssociate,
  type UdpAssociateOptions,
} from "./udp_associate.ts";
