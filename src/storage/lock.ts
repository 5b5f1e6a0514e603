export * from '../repo/lock.js';
