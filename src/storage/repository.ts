export * from '../repo/repository.js';
