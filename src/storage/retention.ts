export * from '../repo/retention.js';
