/**
 * The first transition a Lifecycle emits leaves a real state: the one the connection was in when
 * watching began. Watched from before it connects, with the listener attached before or after the
 * first state is known, a client never reports a transition from `undefined`.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import net from 'node:net';
import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { LIFECYCLE_STATES, type LifecycleState } from '../../src/lifecycle/fsm';
import { STATE_CHANNEL, watch, type Transition } from '../../src/lifecycle/watch';

describe('the first transition', () => {
  it('has a state as its type: no undefined', () => {
    expectTypeOf<Transition['from']>().toEqualTypeOf<LifecycleState>();
    expectTypeOf<Transition['to']>().toEqualTypeOf<LifecycleState>();
  });

  it('leaves the state watching began in, whether the listener came before or after it was known', async () => {
    const server = net.createServer({ allowHalfOpen: true }).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const published: Transition[] = [];
    const onMessage = (m: unknown) => published.push(m as Transition);
    diagnosticsChannel.subscribe(STATE_CHANNEL, onMessage);
    try {
      // Half the runs attach the listener at once, half after the connection is accepted (the
      // documentation's example), by when the first state may or may not have been read.
      for (let run = 0; run < 6; run++) {
        const accepted = once(server, 'connection');
        const client = net.connect(port, '127.0.0.1');
        const lifecycle = watch(client);
        const emitted: Transition[] = [];
        const listen = () => lifecycle.on('transition', (t: Transition) => emitted.push(t));
        if (run % 2 === 0) listen();
        const [peer] = (await accepted) as [net.Socket];
        if (run % 2 === 1) listen();
        const ended = once(peer, 'end');
        peer.resume();
        client.resume();
        client.end();
        await lifecycle.until('FIN_WAIT2', { timeout: 5000 });
        await ended;
        peer.end();
        await lifecycle.until('TIME_WAIT', { timeout: 5000 });
        client.destroy();

        const history = lifecycle.history;
        expect(LIFECYCLE_STATES).toContain(history[0]!.state);
        expect(emitted.length).toBeGreaterThan(0);
        for (const t of emitted) expect(LIFECYCLE_STATES, JSON.stringify(t)).toContain(t.from);
        // Each transition leaves the state before it in the history.
        for (const t of emitted) {
          const i = history.findIndex((h) => h.state === t.to && h.at === t.at && h.source === t.source);
          expect(i, JSON.stringify(t)).toBeGreaterThan(0);
          expect(t.from).toBe(history[i - 1]!.state);
        }
        if (run % 2 === 0) expect(emitted[0]!.from).toBe(history[0]!.state);
        const mine = published.filter((m) => (m as unknown as { lifecycle: unknown }).lifecycle === lifecycle);
        expect(mine.length).toBe(history.length - 1);
        expect(mine[0]).toMatchObject({ from: history[0]!.state, to: history[1]!.state });
      }
    } finally {
      diagnosticsChannel.unsubscribe(STATE_CHANNEL, onMessage);
      server.close();
    }
  });
});
