export * from '../repo/debris.js';
