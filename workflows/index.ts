export { createRootfs } from './create-rootfs';
export { createAllRootfs } from './create-all-rootfs';
