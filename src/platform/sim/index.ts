/** The simulated hypervisor: the embedded default platform where there is no Xen. */
export { SimHypervisor, describeLeak, type Leak, type SimOptions, type SimHypervisorState } from "./hypervisor.ts";
export { SimPlatform } from "./platform.ts";
export { SimGrantTable, FIRST_GRANT_REF } from "./grant-table.ts";
export { SimEventChannels } from "./event-channels.ts";
export { SimXenStore } from "./xenstore.ts";
export { createXenStoreState, SharedXenStore, type XenStoreState } from "./xenstore-state.ts";
export type { SimXenStoreOptions } from "./xenstore.ts";
