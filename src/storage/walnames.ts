export * from '../repo/walnames.js';
