// Types of elf.mjs, for the tests that check the prebuilds with it.
export declare const ELF_MACHINE: Record<string, number>;
export declare const NEWEST_VERSION: Record<string, string>;
export declare function elfInfo(bytes: Uint8Array): { machine: number; needs: Record<string, string[]> };
export declare function tooNew(needs: Record<string, string[]>): string[];
