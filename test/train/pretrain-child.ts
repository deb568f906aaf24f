// Child process for pretrain.test.ts: the pretrain command with argv's flags, so that the test
// can kill it at a writer's pause point (ERNIE_TEST_PAUSE_AT). Not a test file.
import { main } from '../../lib/cli/index'

main(['pretrain', ...process.argv.slice(2)], { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }).then((code) => process.exit(code))
