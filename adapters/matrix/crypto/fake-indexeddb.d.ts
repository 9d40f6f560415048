// fake-indexeddb ships types for its main entry only; './auto' just installs the globals.
declare module 'fake-indexeddb/auto';
