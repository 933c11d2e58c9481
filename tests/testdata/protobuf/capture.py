"""Record the protobuf request bodies kubectl sends, for tests/testdata/protobuf.

    tests/cluster/start.sh DIR                  # a real kube-apiserver
    python3 capture.py DIR OUT PORT &           # plain HTTP on 127.0.0.1:PORT, forwarded as admin
    kubectl --server http://127.0.0.1:PORT create ...

Each protobuf request body is written to OUT/NN-METHOD-path.pb, with the server's answer
(.resp) and the request target and status (.meta). Loopback only; a test tool, not shipped.
"""
import http.server, ssl, urllib.request, os, sys, json, itertools
env = dict(l.strip().split('=',1) for l in open(os.path.join(sys.argv[1], 'env')) if '=' in l)
out = sys.argv[2]
server = env['KUBELEASH_CLUSTER_SERVER'].strip('"\'')
token = env['KUBELEASH_CLUSTER_ADMIN_TOKEN'].strip('"\'')
ctx = ssl.create_default_context(cafile=env['KUBELEASH_CLUSTER_CA'].strip('"\''))
n = itertools.count()
class H(http.server.BaseHTTPRequestHandler):
    def go(self):
        body = self.rfile.read(int(self.headers.get('content-length') or 0))
        ct = self.headers.get('content-type','')
        hdrs = {k:v for k,v in self.headers.items() if k.lower() not in ('host','content-length','authorization','connection','accept-encoding')}
        req = urllib.request.Request(server+self.path, data=body if body else None, method=self.command, headers=hdrs)
        req.add_header('Authorization','Bearer '+token)
        try:
            r = urllib.request.urlopen(req, context=ctx); code=r.status; data=r.read(); rh=r.headers
        except urllib.error.HTTPError as e:
            code=e.code; data=e.read(); rh=e.headers
        if 'protobuf' in ct and body:
            i = next(n)
            base = os.path.join(out, '%02d-%s-%s') % (i, self.command, self.path.split('?')[0].strip('/').replace('/','_'))
            open(base+'.pb','wb').write(body)
            open(base+'.resp','wb').write(data)
            open(base+'.meta','w').write(json.dumps({'path':self.path,'code':code,'resp_ct':rh.get('content-type')}))
        self.send_response(code)
        for k,v in rh.items():
            if k.lower() not in ('transfer-encoding','connection','content-length'):
                self.send_header(k,v)
        self.send_header('content-length', str(len(data)))
        self.end_headers(); self.wfile.write(data)
    do_GET=do_POST=do_PUT=do_PATCH=do_DELETE=go
    def log_message(self,*a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[3])), H).serve_forever()
