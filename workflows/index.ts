export { createRootfs } from './create-rootfs';
export { createAllRootfs } from './create-all-rootfs';
export { createKernel } from './create-kernel';
