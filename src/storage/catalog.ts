export * from '../repo/catalog.js';
