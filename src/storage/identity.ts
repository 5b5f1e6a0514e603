export * from '../repo/identity.js';
