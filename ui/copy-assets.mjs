// Copies the two built files from ui/dist to the repository root (../js, ../css),
// where the Rust binary embeds them. Fails when the build made anything else.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ui = dirname(fileURLToPath(import.meta.url))
const expected = ['css/harpbridge-main.css', 'js/harpbridge-main.js']
const built = readdirSync(join(ui, 'dist'), { recursive: true, withFileTypes: true })
	.filter((entry) => entry.isFile())
	.map((entry) => join(entry.parentPath, entry.name).slice(join(ui, 'dist').length + 1))
	.sort()
if (JSON.stringify(built) !== JSON.stringify(expected)) {
	console.error(`the panel build must make exactly ${expected.join(', ')}; it made ${built.join(', ')}`)
	process.exit(1)
}
for (const file of expected) {
	mkdirSync(dirname(join(ui, '..', file)), { recursive: true })
	copyFileSync(join(ui, 'dist', file), join(ui, '..', file))
	console.log(`copied ${file}`)
}
