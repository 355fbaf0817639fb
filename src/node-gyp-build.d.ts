declare module 'node-gyp-build' {
  /** Loads the prebuild or the compiled addon found under `dir`. */
  function nodeGypBuild(dir: string): unknown;
  export = nodeGypBuild;
}
