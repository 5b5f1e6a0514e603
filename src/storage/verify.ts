export * from '../repo/verify.js';
