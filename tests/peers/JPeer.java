// A JInterface node for tests/test_peer_jinterface.py: OTP's own Java node library as an
// independent peer. Arguments: node name, cookie. It prints "READY" once its mailbox
// "echo" exists and exits when its standard input closes.
//   {Pid, Msg}                          -> Pid ! {EchoPid, Msg}
//   {'$gen_call', {Pid, Tag}, Request}  -> Pid ! {Tag, {java, Request}}   (gen:reply's shape)
//   {link, Pid}                         -> link to Pid; then {exit, Reason} exits the mailbox
import com.ericsson.otp.erlang.*;

public class JPeer {
    static OtpErlangTuple tuple(OtpErlangObject... items) {
        return new OtpErlangTuple(items);
    }

    public static void main(String[] args) throws Exception {
        OtpNode node = new OtpNode(args[0], args[1]);
        OtpMbox mbox = node.createMbox("echo");
        Thread stdin = new Thread(() -> {
            try {
                while (System.in.read() >= 0) { }
            } catch (Exception e) { }
            System.exit(0);
        });
        stdin.setDaemon(true);
        stdin.start();
        System.out.println("READY " + node.node());
        System.out.flush();
        OtpErlangAtom genCall = new OtpErlangAtom("$gen_call");
        while (true) {
            OtpErlangObject o;
            try {
                o = mbox.receive();
            } catch (OtpErlangExit e) {
                System.out.println("EXIT " + e.reason());
                System.out.flush();
                continue;
            }
            if (!(o instanceof OtpErlangTuple)) continue;
            OtpErlangTuple t = (OtpErlangTuple) o;
            if (t.arity() == 3 && t.elementAt(0).equals(genCall) && t.elementAt(1) instanceof OtpErlangTuple) {
                OtpErlangTuple from = (OtpErlangTuple) t.elementAt(1);
                OtpErlangPid pid = (OtpErlangPid) from.elementAt(0);
                mbox.send(pid, tuple(from.elementAt(1), tuple(new OtpErlangAtom("java"), t.elementAt(2))));
            } else if (t.arity() == 2 && t.elementAt(0).equals(new OtpErlangAtom("link"))) {
                mbox.link((OtpErlangPid) t.elementAt(1));
            } else if (t.arity() == 2 && t.elementAt(0).equals(new OtpErlangAtom("exit"))) {
                mbox.exit(t.elementAt(1));
                mbox = node.createMbox("echo");
            } else if (t.arity() == 2 && t.elementAt(0) instanceof OtpErlangPid) {
                mbox.send((OtpErlangPid) t.elementAt(0), tuple(mbox.self(), t.elementAt(1)));
            }
        }
    }
}
