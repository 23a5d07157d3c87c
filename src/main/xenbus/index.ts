/** The xenbus handshake: the control plane of a vif, for netfront and netback. */
export { HandshakeError, type HandshakeErrorCode } from "./errors.ts";
export {
  closeEnd,
  DEFAULT_TIMEOUT_MS,
  Deadline,
  readState,
  setState,
  switchState,
  waitForState,
  waitForValue,
  waitUntil,
  type CloseResult,
  type Found,
  type WaitOptions,
} from "./wait.ts";
export { createVif, destroyVif, type VifPaths, type VifSpec } from "./toolstack.ts";
export {
  awaitBackend,
  awaitBackendConnected,
  closeFrontend,
  DEFAULT_MTU,
  DEFAULT_TX_RETRIES,
  publishFrontend,
  type BackendInfo,
  type FrontendKeys,
  type PublishOptions,
} from "./frontend.ts";
export {
  advertiseBackend,
  awaitFrontend,
  closeBackend,
  connectBackend,
  resetBackendForReconnect,
  watchPeerState,
  type BackendFeatures,
  type FrontendInfo,
} from "./backend.ts";
