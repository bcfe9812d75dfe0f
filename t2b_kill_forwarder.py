import sys; sys.path.insert(0,'/tmp/shared-attack')
from lib import *
mp, url = start_model()
cfg = sys.argv[1] if len(sys.argv)>1 else ""
env = model_env(mkenv(config_text=cfg), url)
rt = env["AGENTD_RUNTIME_DIR"]
N=100; expected = " ".join(f"w{i}" for i in range(1, N+1))
for it in range(4):
    a = Editor(env, name="a"); a.init(env["_WS"])
    sid = a.call("session/create", {"title":"A"})["result"]["session"]["id"]
    a.request("session/chat", {"sessionId": sid, "parts":[{"type":"text","text":f"/stream {N} 20"}]})
    time.sleep(0.3 + it*0.4)
    a.proc.kill(); a.proc.wait()
    time.sleep(0.05*it)
    e = Editor(env, name="e"); e.init(env["_WS"])
    i = e.request("session/messages", {"sessionId": sid})
    r = e.resp(i, 10)
    # wait for idle status
    st = e.wait(lambda m: m.get("method")=="session/status" and m["params"]["status"]=="idle" and m["params"]["sessionId"]==sid, 20)
    time.sleep(0.3)
    msgs = r["result"]["messages"]; am = msgs[-1]
    with e.cv: allm=[m for _,m in e.msgs]
    idx = next(k for k,m in enumerate(allm) if m.get("id")==i and "method" not in m)
    parts = render(allm[idx+1:], sid, snapshot_parts=am["parts"] if am["role"]=="assistant" else [])
    txt = "".join(p.get("text","") for k,p in sorted(parts.items()) if p.get("type")=="text" and p["id"] not in {q["id"] for m in msgs if m["role"]=="user" for q in m["parts"]})
    fin = e.call("session/messages", {"sessionId": sid})["result"]["messages"][-1]
    print(it, "idle seen", bool(st), "follower ok", txt==expected, len(txt), "stored finish", fin.get("finishReason"), "stored ok", text_of(fin)==expected)
    e.close()
kill_daemons(rt); mp.kill()
