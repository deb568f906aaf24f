// Where the package is installed, and its bundled default model.
import * as fs from 'node:fs'
import * as path from 'node:path'

/** The bundled default model's name: its directory under the package's models/. */
export const BUNDLED_MODEL = 'ernie-4.5-tiny-zh'

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

/** Where a bundled model lives in this installation (whether or not it is there). */
export function bundledModelPath(name = BUNDLED_MODEL): string {
  return path.join(packageRoot(), 'models', name)
}

/** The bundled default model's directory, when the package ships one (config and weights). */
export function bundledModelDir(name = BUNDLED_MODEL): string | undefined {
  const dir = bundledModelPath(name)
  const has = (f: string) => fs.existsSync(path.join(dir, f))
  return has('config.json') && (has('model.safetensors') || has('model.safetensors.index.json')) ? dir : undefined
}

/**
 * The bundled model's name when `dir` is its directory: in this installation, or (a save made by
 * another installation of the package, which recorded an absolute path) any `.../ernie-sentiment/models/<name>`.
 */
export function bundledNameOf(dir: string): string | undefined {
  const resolved = path.resolve(dir)
  const here = bundledModelPath()
  if (resolved === here || (fs.existsSync(resolved) && fs.existsSync(here) && fs.realpathSync(resolved) === fs.realpathSync(here))) return BUNDLED_MODEL
  const parts = resolved.split(path.sep)
  const n = parts.length
  return n >= 3 && parts[n - 1] === BUNDLED_MODEL && parts[n - 2] === 'models' && parts[n - 3] === 'ernie-sentiment' ? BUNDLED_MODEL : undefined
}
