export * from './types';
export { BASE_KERNEL_ARGS, GUEST_PORT, isForwardingFailure, QemuMicrovm, qemuArgv, randomHighPort } from './qemu';
export type { QemuArgs, QemuOptions } from './qemu';
export {
  bootAndCheck,
  consoleTail,
  ExecAnswer,
  execArgv,
  execRequestBody,
  firstLine,
  healthArgv,
  parseExecAnswer,
  plainConsole,
  type AcceleratorChoice,
  type BootCheck,
  type BootRequest,
  type BootResult,
} from './boot';
