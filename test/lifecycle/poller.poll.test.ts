/** poller.test.ts on the poller alone (see watch.poll.test.ts). */
import './backend-poll';
import './poller.test';
