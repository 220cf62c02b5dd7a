// Starts AWS's DynamoDB Local listening on one address only (127.0.0.1 by
// default). DynamoDB Local has no option for its address: it listens on
// every interface. This launcher builds the same server DynamoDB Local's own
// main builds, from the same command-line arguments, and sets the address of
// its connector before starting it. Telemetry is never configured (offline).
//
// usage: java [-Dentitle.host=ADDR] -cp DynamoDBLocal.jar LoopbackDynamoDB.java <DynamoDB Local arguments>
// (Java 11+ runs a single source file directly: the JRE is enough.)

import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public final class LoopbackDynamoDB {
    public static void main(String[] args) throws Exception {
        String host = System.getProperty("entitle.host", "127.0.0.1");
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        for (Connector connector : server.getConnectors()) {
            ((ServerConnector) connector).setHost(host);
        }
        proxy.start();
        System.out.println("DynamoDB Local listening on " + host);
        proxy.join();
    }
}
