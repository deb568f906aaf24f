// Where the package is installed, and its bundled default model.
import * as fs from 'node:fs'
import * as path from 'node:path'

/** The package's root directory (the one holding its package.json). */
export function packageRoot(): string {
  let dir = __dirname
  for (;;) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'ernie-sentiment') return dir
      } catch {
        // not ours: keep walking up
      }
    }
    const up = path.dirname(dir)
    if (up === dir) return path.resolve(__dirname, '..', '..')
    dir = up
  }
}

/** The bundled default model's directory, when the package ships one (config and weights). */
export function bundledModelDir(): string | undefined {
  const dir = path.join(packageRoot(), 'models', 'ernie-4.5-tiny-zh')
  const has = (f: string) => fs.existsSync(path.join(dir, f))
  return has('config.json') && (has('model.safetensors') || has('model.safetensors.index.json')) ? dir : undefined
}
