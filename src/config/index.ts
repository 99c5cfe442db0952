export * from './schema';
export { ConfigError, loadConfig, resolveConfigPath, type LoadedConfig, type LoadOptions } from './load';
export { PROFILES } from './profiles';
