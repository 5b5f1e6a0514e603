export * from '../repo/walarchive.js';
