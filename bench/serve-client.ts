// The load generator for bench:serve, run as its own process (so that the clients' JSON and
// socket work is not on the server's event loop): `concurrency` keep-alive connections each
// send one review per request until every review has been sent, recording each latency.
// argv: URL CONCURRENCY FILE (JSON array of texts); prints one JSON line of results, with the
// CPU time the clients used.
import * as fs from 'node:fs'
import * as http from 'node:http'

async function main(): Promise<void> {
  const [url, concurrencyArg, file] = process.argv.slice(2)
  const texts = JSON.parse(fs.readFileSync(file, 'utf8')) as string[]
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrencyArg) })
  const latencies: number[] = []
  let errors = 0
  let next = 0
  const one = (text: string) =>
    new Promise<void>((resolve) => {
      const body = JSON.stringify({ text })
      const started = performance.now()
      const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let data = ''
        res.on('data', (d) => (data += d))
        res.on('end', () => {
          latencies.push(performance.now() - started)
          try {
            const answer = JSON.parse(data)
            if (res.statusCode !== 200 || !Array.isArray(answer) || typeof answer[0]?.label !== 'string') errors++
          } catch {
            errors++
          }
          resolve()
        })
      })
      req.on('error', () => {
        errors++
        resolve()
      })
      req.end(body)
    })
  const started = performance.now()
  const cpuBefore = process.cpuUsage()
  await Promise.all(
    Array.from({ length: Number(concurrencyArg) }, async () => {
      while (next < texts.length) await one(texts[next++])
    }),
  )
  const seconds = (performance.now() - started) / 1000
  const cpu = process.cpuUsage(cpuBefore)
  agent.destroy()
  latencies.sort((a, b) => a - b)
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]
  // the CPU the clients themselves took, which the server does not get on a machine it shares with them
  console.log(JSON.stringify({ requests: texts.length, seconds, p50_ms: at(0.5), p99_ms: at(0.99), errors, cpu_s: (cpu.user + cpu.system) / 1e6 }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
