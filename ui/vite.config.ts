/**
 * Builds the panel into exactly two files at the repository root:
 *
 *   js/harpbridge-main.js    (AppAPI script path `js/harpbridge-main`)
 *   css/harpbridge-main.css  (AppAPI style path  `css/harpbridge-main`)
 *
 * AppAPI injects the script and the style into its embedded page and the browser
 * fetches them through AppAPI's PHP proxy, so there is one script (no dynamic
 * chunks: `inlineDynamicImports`), one stylesheet (`cssCodeSplit: false`) and every
 * other asset (icons, fonts) is inlined. The build must be deterministic: CI
 * rebuilds from a clean `npm ci` and fails when the result differs from the
 * committed files, so nothing here may depend on time, paths or randomness.
 */
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'


export default defineConfig({
	plugins: [vue()],
	// Nothing is copied from a public/ folder.
	publicDir: false,
	define: {
		'process.env.NODE_ENV': JSON.stringify('production'),
		__VUE_OPTIONS_API__: 'true',
		__VUE_PROD_DEVTOOLS__: 'false',
		__VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
	},
	build: {
		// Built into ui/dist/{js,css}; `npm run build` then copies both files to the
		// repository root (copy-assets.mjs), where the binary embeds them.
		outDir: 'dist',
		emptyOutDir: true,
		copyPublicDir: false,
		cssCodeSplit: false,
		// Inline every asset (svg, fonts) into the JS or CSS.
		assetsInlineLimit: () => true,
		sourcemap: false,
		manifest: false,
		modulePreload: false,
		reportCompressedSize: false,
		chunkSizeWarningLimit: 4096,
		target: 'es2020',
		rollupOptions: {
			input: fileURLToPath(new URL('./src/main.ts', import.meta.url)),
			output: {
				format: 'iife',
				inlineDynamicImports: true,
				entryFileNames: 'js/harpbridge-main.js',
				assetFileNames: (info) => {
					const name = info.names?.[0] ?? info.name ?? ''
					if (name.endsWith('.css')) {
						return 'css/harpbridge-main.css'
					}
					throw new Error(`unexpected asset in the panel build: ${name}`)
				},
			},
		},
	},
})
